#!/bin/sh
# Draws the curves' chart from the CSV files of build/bench (called by
# `make bench`): bench/chart.sh CSV_DIR writes CSV_DIR/curves.svg. Installs
# gnuplot (Debian's gnuplot-nox) if it is missing and this is root with
# apt-get; otherwise, or when a curve did not run, it says why and skips
# the chart (exit status 0: the chart is never a failure of the benchmark).
dir=${1:-build/bench-csv}
here=$(dirname "$0")

for f in c3_threads c6_objects c2_producers cm_many; do
    if [ ! -f "$dir/$f.csv" ]; then
        echo "chart: skipped: $dir/$f.csv is missing (the chart needs all four curves: C3 C6 C2 CM)"
        exit 0
    fi
done
if ! command -v gnuplot >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "chart: installing gnuplot (apt-get install -y gnuplot-nox)"
        apt-get install -y gnuplot-nox >/dev/null 2>&1 ||
            { apt-get update >/dev/null 2>&1 && apt-get install -y gnuplot-nox >/dev/null 2>&1; }
    fi
    if ! command -v gnuplot >/dev/null 2>&1; then
        echo "chart: skipped: gnuplot is not installed and could not be installed here"
        echo "       (Debian/Ubuntu: apt-get install gnuplot-nox); the CSV files are in $dir/"
        exit 0
    fi
fi
if gnuplot -e "dir='$dir'; out='$dir/curves.svg'" "$here/curves.gp"; then
    echo "chart: $dir/curves.svg"
else
    echo "chart: gnuplot failed; the CSV files are in $dir/"
fi
exit 0

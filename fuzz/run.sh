#!/bin/sh
# Runs the API fuzzer for `make fuzz`: usage
#   fuzz/run.sh BINARY WORKDIR SECONDS "st mt" [libFuzzer args...]
# Each mode runs as its own libFuzzer process for SECONDS / (number of
# modes), on a fresh copy of fuzz/corpus/ in WORKDIR/MODE/corpus (fuzz/corpus
# is never written), with crashes, leaks and hangs (-timeout) written to
# WORKDIR/MODE/artifacts/. Prints libFuzzer's final counts per mode and exits
# 1, naming the reproducer, if a run found something.
#
# Leaks: the single-threaded mode lets libFuzzer check for leaks after each
# input that mallocs more than it frees, so a leak comes with its input. The
# multi-threaded mode keeps its threads (and their pool caches) across inputs,
# which makes that check fire on nearly every input and cuts its speed by
# two thirds, so there it is off (-detect_leaks=0) and LeakSanitizer checks
# once at exit: a leak then fails the run with allocation stacks but no input.
set -u
bin=$1 work=$2 seconds=$3 modes=$4
shift 4
n=$(echo $modes | wc -w)
per=$((seconds / n))
[ "$per" -ge 1 ] || per=1
rm -rf "$work"
status=0
for mode in $modes; do
    dir=$work/$mode
    mkdir -p "$dir/corpus" "$dir/artifacts"
    cp fuzz/corpus/* "$dir/corpus/"
    extra=
    [ "$mode" = mt ] && extra=-detect_leaks=0
    DESYNC_FUZZ_MODE=$mode "$bin" -max_total_time=$per -max_len=1024 -timeout=30 \
        -print_final_stats=1 -artifact_prefix="$dir/artifacts/" $extra "$@" "$dir/corpus" \
        > "$dir/fuzz.log" 2>&1
    rc=$?
    # (a crash makes libFuzzer print its final stats twice)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/fuzz.log" | head -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$dir/fuzz.log" | head -n 1)
    echo "fuzz $mode: ${runs:-?} executions in $per s, ${rate:-?} exec/s (log: $dir/fuzz.log)"
    if [ "$rc" -ne 0 ]; then
        status=1
        grep -E 'fuzz_api: invariant|ERROR:|SUMMARY:' "$dir/fuzz.log" | head -n 5
        found=0
        for f in "$dir"/artifacts/*; do
            [ -e "$f" ] || continue
            found=1
            echo "fuzz $mode: reproducer $f"
            echo "    run: DESYNC_FUZZ_MODE=$mode $bin $f  (DESYNC_FUZZ_TRACE=1 prints each call)"
        done
        [ "$found" = 1 ] || echo "fuzz $mode: no reproducer (a leak found at exit?), see the log"
        echo "FAIL fuzz $mode (exit $rc)"
    fi
done
exit $status

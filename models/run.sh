#!/bin/bash
# Checks the SPIN models (models/README.md): every correct configuration must
# pass (no error, search complete) and every injected-bug variant must fail.
# Prints one line per check. Called by `make model`.
#
#   models/run.sh [build-dir]     (default build/model)
#   MODEL_JOBS=n    checks run at once (default 2)
#   CC=...          compiler for the verifiers (default cc)
set -u

top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-build/model}
jobs=${MODEL_JOBS:-2}
cc=${CC:-cc}

if ! command -v spin >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "model: installing spin (apt-get install -y spin)"
        apt-get install -y spin >/dev/null 2>&1 ||
            { apt-get update >/dev/null 2>&1 && apt-get install -y spin >/dev/null 2>&1; }
    fi
    if ! command -v spin >/dev/null 2>&1; then
        echo "model: SKIPPED: the model checker spin is not installed and could not be"
        echo "       installed here (Debian/Ubuntu: apt-get install spin)"
        exit 0
    fi
fi

# name  model  expect(pass|fail)  spin defines
checks="
queue-core            queue.pml    pass -DCONFIG=1
queue-futures         queue.pml    pass -DCONFIG=2
queue-sched           queue.pml    pass -DCONFIG=3
queue-closed          queue.pml    pass -DCONFIG=4
queue-missed-wakeup   queue.pml    fail -DCONFIG=1 -DBUG_MISSED_WAKEUP
queue-missed-wakeup-signal queue.pml fail -DCONFIG=1 -DBUG_MISSED_WAKEUP_SIGNAL
queue-double-token    queue.pml    fail -DCONFIG=1 -DBUG_DOUBLE_TOKEN
queue-double-submit   queue.pml    fail -DCONFIG=1 -DBUG_DOUBLE_SUBMIT
queue-stale-entry-runs queue.pml   fail -DCONFIG=1 -DBUG_STALE_ENTRY_RUNS
queue-early-return    queue.pml    fail -DCONFIG=1 -DBUG_EARLY_RETURN
queue-left-waiter     queue.pml    fail -DCONFIG=2 -DBUG_LEFT_WAITER
queue-waiter-not-removed queue.pml fail -DCONFIG=2 -DBUG_WAITER_NOT_REMOVED
queue-barge-no-wake   queue.pml    fail -DCONFIG=1 -DBUG_BARGE_NO_WAKE
queue-barge-look-first queue.pml   fail -DCONFIG=1 -DBUG_BARGE_LOOK_FIRST
queue-barge-clear-any queue.pml    fail -DCONFIG=1 -DBUG_BARGE_CLEAR_ANY
queue-barge-no-sat    queue.pml    fail -DCONFIG=1 -DBUG_BARGE_NO_SAT
deadlock-2cycle       deadlock.pml pass -DCONFIG=1
deadlock-3threads     deadlock.pml pass -DCONFIG=2
deadlock-walk-before-publish deadlock.pml fail -DCONFIG=2 -DBUG_WALK_BEFORE_PUBLISH
deadlock-no-validate  deadlock.pml fail -DCONFIG=2 -DBUG_NO_VALIDATE
deadlock-no-gen-check deadlock.pml fail -DCONFIG=2 -DBUG_NO_GEN_CHECK
deadlock-hop-limit    deadlock.pml fail -DCONFIG=2 -DBUG_HOP_LIMIT
"

# One check: build the verifier in $out/<name>/, run it, print one line.
# Exit status 0 if the result is the expected one.
one() {
    local name=$1 model=$2 expect=$3
    shift 3
    local dir=$out/$name
    rm -rf "$dir" && mkdir -p "$dir" || return 1
    cp "$top/models/$model" "$dir/" || return 1
    local t0 t1
    t0=$(date +%s.%N)
    if ! (cd "$dir" && spin -a "$@" "$model" >spin.log 2>&1); then
        printf '%-30s FAIL  spin -a failed (%s/spin.log)\n' "$name" "$dir"
        return 1
    fi
    # -O0: the generated verifier is large, and gcc -O1/-O2 take minutes
    # to compile it for a few seconds saved in the search.
    if ! (cd "$dir" && $cc -O0 -w -DSAFETY -DCOLLAPSE -DMEMLIM=8192 -o pan pan.c >cc.log 2>&1); then
        printf '%-30s FAIL  compiling the verifier failed (%s/cc.log)\n' "$name" "$dir"
        return 1
    fi
    (cd "$dir" && ./pan -n -m100000 >pan.log 2>&1)
    t1=$(date +%s.%N)
    local log=$dir/pan.log secs states errors first
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    states=$(awk '/states, stored/ { print $1; exit }' "$log")
    errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$log" | head -n 1)
    first=$(grep -m 1 '^pan:1:' "$log" | sed 's/^pan:1: //; s/ (at depth.*//' | cut -c1-60)
    if [ -z "$errors" ]; then
        printf '%-30s FAIL  the verifier did not finish (%s)\n' "$name" "$log"
        return 1
    fi
    local incomplete=
    grep -q -e 'max search depth too small' -e 'MEMLIM' -e 'out of memory' "$log" && incomplete=1
    if [ "$expect" = pass ]; then
        if [ "$errors" = 0 ] && [ -z "$incomplete" ]; then
            printf '%-30s ok      %10s states  %6ss\n' "$name" "$states" "$secs"
            return 0
        fi
        printf '%-30s FAIL    %10s states  %6ss  %s\n' "$name" "$states" "$secs" \
            "${first:-search incomplete} (trail: cd $dir && spin -t -p $* $model)"
        return 1
    fi
    if [ "$errors" != 0 ]; then
        printf '%-30s caught  %10s states  %6ss  %s\n' "$name" "$states" "$secs" "$first"
        return 0
    fi
    printf '%-30s FAIL    %10s states  %6ss  the injected bug was not caught\n' \
        "$name" "$states" "$secs"
    return 1
}
export -f one
export top out cc

mkdir -p "$out" || exit 1
start=$(date +%s)
echo "model: $(echo "$checks" | grep -c .) checks, $jobs at a time; verifiers in $out/"
echo "$checks" | grep . | xargs -P "$jobs" -L 1 bash -c 'one "$@"' _ | tee "$out/results"
fails=$(grep -c ' FAIL ' "$out/results")
n=$(grep -c . "$out/results")
echo "model: $n checks in $(($(date +%s) - start)) s, $fails failed"
[ "$fails" = 0 ] && [ "$n" = "$(echo "$checks" | grep -c .)" ]

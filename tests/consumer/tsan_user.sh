#!/bin/sh
# make check-tsan-user: what a user who runs ThreadSanitizer on their own
# program gets from a libdesync installed with `make install SAN=thread`.
#
#  1. installs the ThreadSanitizer build of the library into a temporary
#     DESTDIR (PREFIX /usr/local);
#  2. builds tests/consumer/tsan_user.c (race-free, threads sharing objects
#     through desync, sync, sync_all, futures and a promise) with
#     -fsanitize=thread through pkg-config, against the shared and against
#     the static library, runs both, and fails on any ThreadSanitizer
#     report (halt_on_error=1, exitcode=66, and a grep of the output);
#  3. builds it again with -DRACY (a plain counter shared without any
#     synchronisation) and fails unless TSan reports that race;
#  4. for comparison only (never fails): the race-free program against the
#     library installed without SAN, whose synchronisation TSan cannot see,
#     and the number of (false) reports it gets.
#
# Environment: CC (default gcc: the program must be built by the compiler
# the library was built with, as gcc's and clang's TSan runtimes do not
# mix), MAKE. Run from the top of the source tree.
set -eu

CC=${CC:-gcc}
MAKE=${MAKE:-make}
# TSan refuses to start on kernels with high ASLR entropy ("unexpected
# memory mapping"): run without address randomisation where allowed, as the
# Makefile does for its TSan builds.
RUN_PREFIX=
if setarch "$(uname -m)" -R true 2> /dev/null; then
    RUN_PREFIX="setarch $(uname -m) -R"
fi
SRC=$(pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
prefix=/usr/local
WARN="-std=c11 -Wall -Wextra -pedantic -Werror"
TSAN="-fsanitize=thread -O1 -g"

command -v pkg-config > /dev/null ||
    { echo "check-tsan-user: needs pkg-config"; exit 1; }

# install STAGE [make args...]: make install into STAGE.
install_into() {
    stage=$1
    shift
    $MAKE -s --no-print-directory install DESTDIR="$stage" PREFIX=$prefix CC="$CC" "$@" > /dev/null
}

# use_stage STAGE: pkg-config finds the library installed in STAGE.
use_stage() {
    export PKG_CONFIG_LIBDIR="$1$prefix/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$1"
}

# build OUT STAGE [cc args...]: tsan_user.c against the shared library in
# STAGE, found through pkg-config (with an rpath to the stage).
build() {
    out=$1 stage=$2
    shift 2
    use_stage "$stage"
    # shellcheck disable=SC2046,SC2086
    $CC $WARN $TSAN "$@" $(pkg-config --cflags desync) "$SRC/tests/consumer/tsan_user.c" \
        -o "$out" $(pkg-config --libs desync) -Wl,-rpath,"$stage$prefix/lib"
}

# run BINARY LOG: runs it with TSan stopping at the first report; prints
# the exit status.
run() {
    rc=0
    # shellcheck disable=SC2086
    TSAN_OPTIONS="halt_on_error=1 exitcode=66 ${TSAN_OPTIONS:-}" $RUN_PREFIX "$1" > "$2" 2>&1 || rc=$?
    echo $rc
}

echo "-- check-tsan-user: make install SAN=thread DESTDIR=<tmp> PREFIX=$prefix ($CC)"
install_into "$TMP/tsan" SAN=thread

build "$TMP/user_shared" "$TMP/tsan"
use_stage "$TMP/tsan"
# The static archive, with what --static adds.
# shellcheck disable=SC2046,SC2086
$CC $WARN $TSAN $(pkg-config --cflags desync) "$SRC/tests/consumer/tsan_user.c" -o "$TMP/user_static" \
    $(pkg-config --libs-only-L desync) -Wl,-Bstatic -ldesync -Wl,-Bdynamic \
    $(pkg-config --static --libs-only-other desync)
if readelf -d "$TMP/user_static" | grep -q 'NEEDED.*libdesync'; then
    echo "check-tsan-user: user_static links the shared library"; exit 1
fi
ldd "$TMP/user_shared" | grep -q "libdesync.so.* => $TMP/tsan$prefix/lib/" ||
    { ldd "$TMP/user_shared"; echo "check-tsan-user: not linked to the staged library"; exit 1; }

for kind in shared static; do
    rc=$(run "$TMP/user_$kind" "$TMP/user_$kind.log")
    if [ "$rc" != 0 ] || grep -q "WARNING: ThreadSanitizer" "$TMP/user_$kind.log" ||
        ! grep -qx "tsan_user ok" "$TMP/user_$kind.log"; then
        cat "$TMP/user_$kind.log"
        echo "FAIL check-tsan-user: the race-free program ($kind library) got a report or failed (exit $rc)"
        exit 1
    fi
    echo "   race-free program, $kind library: no ThreadSanitizer report"
done

build "$TMP/user_racy" "$TMP/tsan" -DRACY
rc=$(run "$TMP/user_racy" "$TMP/user_racy.log")
if [ "$rc" != 66 ] || ! grep -q "WARNING: ThreadSanitizer: data race" "$TMP/user_racy.log"; then
    cat "$TMP/user_racy.log"
    echo "FAIL check-tsan-user: the racy program was not reported (exit $rc)"
    exit 1
fi
echo "   racy program (-DRACY): the race is reported, as it must be"

install_into "$TMP/plain"
build "$TMP/user_plain" "$TMP/plain"
TSAN_OPTIONS="exitcode=0 ${TSAN_OPTIONS:-}" $RUN_PREFIX "$TMP/user_plain" > "$TMP/user_plain.log" 2>&1 || true
echo "   for comparison, against the library built without SAN=thread:" \
    "$(grep -c "WARNING: ThreadSanitizer" "$TMP/user_plain.log" || true) (false) report(s)"
echo "check-tsan-user: ok"

#!/bin/sh
# What the built library exposes (run by `make test`, and by CI on the CMake
# build too):
#  - the shared library exports exactly the desync_* functions declared with
#    DESYNC_API in include/ (no more: internals stay private; no less: every
#    declared call links), each under the version node DESYNC_<soversion>,
#    and its soname is libdesync.so.<soversion>;
#  - the static archive defines no global name but those functions, so its
#    internal dsy_* names cannot collide with a program's, and leaves no
#    dsy_* name undefined.
#
#   tests/check_symbols.sh [--shared LIB.so] [--static LIB.a] SOVERSION
# Run from the top of the source tree. Exits 1 with the differences on failure.
set -eu

shared= static=
while [ $# -gt 1 ]; do
    case $1 in
    --shared) shared=$2; shift 2 ;;
    --static) static=$2; shift 2 ;;
    *) break ;;
    esac
done
[ $# -eq 1 ] || { echo "usage: $0 [--shared LIB] [--static LIB] SOVERSION" >&2; exit 2; }
soversion=$1
NM=${NM:-nm}
READELF=${READELF:-readelf}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

# The public API: the function name before the first "(" of each line that
# declares something with DESYNC_API (the name is on that line by convention).
grep -h 'DESYNC_API' include/desync.h include/desync/*.h | grep -v '^#' |
    sed -n 's/^[^(]*\b\(desync_[a-z0-9_]*\) *(.*/\1/p' | sort -u > "$tmp/api"
n=$(wc -l < "$tmp/api")
if [ "$n" -lt 10 ] || ! grep -qx desync_version "$tmp/api"; then
    echo "check_symbols: could not read the API from include/ ($n names)"
    exit 1
fi

# compare WHAT LIST: the names in LIST must be exactly those in $tmp/api.
compare() {
    if ! cmp -s "$tmp/api" "$2"; then
        echo "check_symbols: $1 differs from the DESYNC_API declarations:"
        comm -23 "$tmp/api" "$2" | sed 's/^/  missing: /'
        comm -13 "$tmp/api" "$2" | sed 's/^/  extra:   /'
        fail=1
    fi
}

if [ -n "$shared" ]; then
    # Defined dynamic symbols, without the version node itself (type A).
    "$NM" -D --defined-only "$shared" | awk '$2 != "A" { print $3 }' > "$tmp/dyn"
    sed 's/@.*//' "$tmp/dyn" | sort -u > "$tmp/shared"
    compare "$shared (exports)" "$tmp/shared"
    if grep -q @ "$tmp/dyn"; then # nm shows versions (binutils 2.35 and later)
        if grep -v "@@DESYNC_$soversion\$" "$tmp/dyn" > "$tmp/unversioned"; then
            echo "check_symbols: $shared: exported outside the DESYNC_$soversion version node:"
            sed 's/^/  /' "$tmp/unversioned"
            fail=1
        fi
    fi
    soname=$("$READELF" -d "$shared" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
    if [ "$soname" != "libdesync.so.$soversion" ]; then
        echo "check_symbols: $shared: soname '$soname', expected libdesync.so.$soversion"
        fail=1
    fi
    echo "check_symbols: $shared: $(wc -l < "$tmp/shared") exports, soname $soname"
fi

if [ -n "$static" ]; then
    "$NM" -g --defined-only "$static" | awk 'NF == 3 { print $3 }' | sort -u > "$tmp/static"
    compare "$static (global definitions)" "$tmp/static"
    if "$NM" -u "$static" | awk '{ print $NF }' | grep '^dsy_' > "$tmp/undef"; then
        echo "check_symbols: $static: leaves internal names undefined:"
        sed 's/^/  /' "$tmp/undef"
        fail=1
    fi
    echo "check_symbols: $static: $(wc -l < "$tmp/static") global definitions"
fi

exit $fail

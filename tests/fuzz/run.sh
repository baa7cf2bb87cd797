#!/bin/sh
# run.sh — build the libFuzzer targets with clang and fuzz each one.
#
#   tests/fuzz/run.sh SECONDS [TARGET...]
#     (targets: envelope data tcp_frame; default all, SECONDS each)
#   tests/fuzz/run.sh --regen               (rewrite the seed corpora)
#
# Each target runs for SECONDS (-max_total_time) on a COPY of its seed corpus
# in the build dir ($FUZZ_BUILD_DIR, default build-fuzz/), so the corpora in
# the repo stay as committed. Exits non-zero if a target crashes, leaks or
# trips a sanitizer; the reproducer is left in $FUZZ_BUILD_DIR/artifacts/.
# The main build uses gcc, which cannot build libFuzzer targets, so this
# compiles the few library sources it needs directly.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${FUZZ_BUILD_DIR:-$root/build-fuzz}
CC=${CC:-clang}
pc=msgpack
pkg-config --exists $pc 2>/dev/null || pc=msgpack-c

mkdir -p "$out/artifacts"
cflags="-std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer \
 -Wall -Wextra -Werror -Wno-unused-parameter \
 -I$root/include -I$root/lib -I$root/transports/tcp \
 $(pkg-config --cflags $pc libuv)"
san="-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
libsrc="$root/lib/alloc.c $root/lib/errors.c $root/lib/mpread.c $root/lib/codec.c $root/lib/data.c"
libs=$(pkg-config --libs $pc libuv)

if [ "${1:-}" = "--regen" ]; then
    $CC $cflags -fsanitize=address,undefined $libsrc "$here/gen_corpus.c" \
        -o "$out/gen_corpus" $libs
    rm -rf "$here/corpus/envelope" "$here/corpus/data"
    mkdir -p "$here/corpus/envelope" "$here/corpus/data"
    "$out/gen_corpus" "$here/corpus/envelope" "$here/corpus/data"
    echo "corpora written to $here/corpus/"
    exit 0
fi

secs=${1:?usage: run.sh SECONDS [envelope|data ...] | --regen}
shift
targets=${*:-envelope data tcp_frame}
status=0
for t in $targets; do
    echo "== building fuzz_$t"
    # shellcheck disable=SC2086
    $CC $cflags $san $libsrc "$here/fuzz_$t.c" -o "$out/fuzz_$t" $libs
    rm -rf "$out/corpus-$t"
    mkdir -p "$out/corpus-$t"
    if [ -d "$here/corpus/$t" ]; then
        cp "$here/corpus/$t"/* "$out/corpus-$t"/ 2>/dev/null || true
    fi
    echo "== fuzzing fuzz_$t for ${secs}s"
    if ! "$out/fuzz_$t" -max_total_time="$secs" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$out/artifacts/$t-" "$out/corpus-$t"; then
        echo "!! fuzz_$t FAILED (see $out/artifacts/)" >&2
        status=1
    fi
done
exit $status

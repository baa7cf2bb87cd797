#!/usr/bin/env bash
# Regenerate tests/abi/exports.txt from a fresh build of libsaga.so, after an
# intended change to the public API. Review the diff before committing it.
#   usage: bash tests/abi/update-exports.sh [build-dir]   (default: build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/exports.sh"
build=${1:-$root/build}
if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S "$root" -B "$build" >/dev/null
fi
cmake --build "$build" --target saga -j2 >/dev/null
so="$build/libsaga.so"
[ -f "$so" ] || { echo "update-exports: $so was not built" >&2; exit 1; }
# The optional plug-ins' symbols stay in their own lists.
saga_list_exports "$so" | LC_ALL=C comm -23 - <(cat "$here"/exports-*.txt 2>/dev/null | LC_ALL=C sort -u) > "$here/exports.txt"
# The Kafka transport is a library of its own (libsaga_kafka), when built.
if grep -q '^SAGA_WITH_KAFKA:BOOL=ON' "$build/CMakeCache.txt"; then
    cmake --build "$build" --target saga_kafka -j2 >/dev/null
    saga_list_exports "$build/libsaga_kafka.so" > "$here/exports-kafka.txt"
    echo "update-exports: wrote $(wc -l < "$here/exports-kafka.txt") symbols to tests/abi/exports-kafka.txt"
fi
echo "update-exports: wrote $(wc -l < "$here/exports.txt") symbols to tests/abi/exports.txt"
git -C "$root" diff --stat -- tests/abi/exports.txt 2>/dev/null || true

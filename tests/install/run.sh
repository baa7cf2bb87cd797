#!/usr/bin/env bash
# Install test: install a built tree into a temporary prefix, then build
# tests/install/consumer.c against the INSTALLED library only, with
#   1. pkg-config --cflags --libs saga            (shared)
#   2. pkg-config --static --libs saga            (libsaga.a)
#   3. find_package(saga) + saga::saga / saga::saga_static (CMake project in
#      this directory)
# and run every binary.
#   usage: run.sh BUILD_DIR      (keeps its work dir with KEEP=1)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:?usage: run.sh BUILD_DIR}" && pwd)
CC=${CC:-cc}
work=$(mktemp -d "${TMPDIR:-/tmp}/saga-install.XXXXXX")
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
step() { echo "install-test: $*"; }
die() { echo "install-test: FAIL: $*" >&2; exit 1; }

# --- install ------------------------------------------------------------------
step "cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" > "$work/install.log" 2>&1 ||
    { cat "$work/install.log" >&2; die "cmake --install failed"; }

pc=$(find "$prefix" -path '*/pkgconfig/saga.pc' -print -quit)
[ -n "$pc" ] || die "no pkgconfig/saga.pc installed"
libdir=$(dirname "$(dirname "$pc")")
for f in "$prefix/include/saga/saga.h" "$libdir/libsaga.so" "$libdir/libsaga.a" \
         "$libdir/cmake/saga/sagaConfig.cmake" \
         "$libdir/cmake/saga/sagaConfigVersion.cmake" \
         "$libdir/cmake/saga/sagaTargets.cmake"; do
    [ -e "$f" ] || die "missing after install: ${f#$prefix/}"
done
for h in "$here"/../../include/saga/*.h; do
    [ -f "$prefix/include/saga/$(basename "$h")" ] ||
        die "public header $(basename "$h") not installed"
done
stray=$(cd "$prefix/include" && find . -type f ! -path './saga/*.h')
[ -z "$stray" ] || die "non-public files installed under include/: $stray"
soname=$(readelf -d "$libdir/libsaga.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ -n "$soname" ] && [ -e "$libdir/$soname" ] || die "SONAME link '$soname' not installed"
grep -qx "prefix=$prefix" "$pc" || die "saga.pc does not name the install prefix: $(grep '^prefix=' "$pc")"

# consumer.c uses the definition and engine API; both must be there.
defs=(SAGA_CONSUMER_DEF SAGA_CONSUMER_ENGINE)
dflags=(); for d in "${defs[@]}"; do dflags+=("-D$d"); done
step "consumer features: ${defs[*]:-(version and errors only)}"

export PKG_CONFIG_PATH="$libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
[ "$(pkg-config --variable=prefix saga)" = "$prefix" ] ||
    die "pkg-config finds another saga.pc: $(pkg-config --path saga)"

# --- 1. pkg-config, shared ----------------------------------------------------
step "pkg-config shared: $(pkg-config --cflags --libs saga)"
# shellcheck disable=SC2046
$CC -Wall -Wextra -Werror "${dflags[@]}" "$here/consumer.c" -o "$work/consumer-pc" \
    $(pkg-config --cflags --libs saga) || die "build with pkg-config failed"
# Output captured first: with pipefail, `ldd | grep -q` fails when grep
# exits early and ldd gets SIGPIPE.
deps=$(LD_LIBRARY_PATH="$libdir" ldd "$work/consumer-pc")
grep -q "$libdir/libsaga.so" <<< "$deps" ||
    die "consumer-pc does not load the installed libsaga.so: $deps"
LD_LIBRARY_PATH="$libdir" "$work/consumer-pc" || die "consumer-pc failed"

# --- 2. pkg-config, static ----------------------------------------------------
# -l:libsaga.a picks the archive although libsaga.so sits beside it.
static_libs=$(pkg-config --static --libs saga | sed 's/-lsaga\b/-l:libsaga.a/')
step "pkg-config static: $static_libs"
# shellcheck disable=SC2046,SC2086
$CC -Wall -Wextra -Werror "${dflags[@]}" "$here/consumer.c" -o "$work/consumer-static" \
    $(pkg-config --cflags saga) $static_libs || die "static build with pkg-config failed"
dyn=$(readelf -d "$work/consumer-static")
if grep -q 'NEEDED.*libsaga' <<< "$dyn"; then
    die "consumer-static still needs libsaga.so"
fi
"$work/consumer-static" || die "consumer-static failed"

# --- 2b. the Kafka transport's library, when it was built --------------------
kafka=0
if [ -e "$libdir/libsaga_kafka.so" ]; then
    kafka=1
    [ -f "$libdir/pkgconfig/saga-kafka.pc" ] || die "no pkgconfig/saga-kafka.pc installed"
    step "pkg-config saga-kafka: $(pkg-config --cflags --libs saga-kafka)"
    # shellcheck disable=SC2046
    $CC -Wall -Wextra -Werror "$here/consumer_kafka.c" -o "$work/consumer-kafka" \
        $(pkg-config --cflags --libs saga-kafka) || die "build with pkg-config saga-kafka failed"
    LD_LIBRARY_PATH="$libdir" "$work/consumer-kafka" || die "consumer-kafka failed"
    # Our libraries static, librdkafka shared (its static closure needs
    # compression -dev packages that are not ours to require).
    kstatic="-l:libsaga_kafka.a $static_libs $(pkg-config --libs rdkafka)"
    # shellcheck disable=SC2046,SC2086
    $CC -Wall -Wextra -Werror "$here/consumer_kafka.c" -o "$work/consumer-kafka-static" \
        $(pkg-config --cflags saga-kafka) $kstatic || die "static build with saga-kafka failed"
    "$work/consumer-kafka-static" || die "consumer-kafka-static failed"
fi

# --- 3. CMake find_package ----------------------------------------------------
step "find_package(saga) with CMAKE_PREFIX_PATH=$prefix"
defs_arg=$(IFS=';'; echo "${defs[*]:-}")
cmake -S "$here" -B "$work/cmake" -DCMAKE_PREFIX_PATH="$prefix" \
      -DSAGA_CONSUMER_DEFS="$defs_arg" > "$work/cmake.log" 2>&1 ||
    { cat "$work/cmake.log" >&2; die "configuring the find_package consumer failed"; }
found=$(sed -n 's/^saga_DIR:PATH=//p' "$work/cmake/CMakeCache.txt")
[ "${found#$prefix/}" != "$found" ] || die "find_package used $found, not $prefix"
cmake --build "$work/cmake" -j2 > "$work/build.log" 2>&1 ||
    { cat "$work/build.log" >&2; die "building the find_package consumer failed"; }
LD_LIBRARY_PATH="$libdir" "$work/cmake/consumer" || die "cmake consumer failed"
"$work/cmake/consumer_static" || die "cmake consumer_static failed"

if [ $kafka = 1 ]; then
    [ -x "$work/cmake/consumer_kafka" ] || die "find_package(saga COMPONENTS kafka) did not find the Kafka transport"
    LD_LIBRARY_PATH="$libdir" "$work/cmake/consumer_kafka" || die "cmake consumer_kafka failed"
    "$work/cmake/consumer_kafka_static" || die "cmake consumer_kafka_static failed"
fi
extra=""
if [ $kafka = 1 ]; then extra=", and the Kafka transport's"; fi
step "OK (pkg-config shared + static, find_package shared + static$extra)"

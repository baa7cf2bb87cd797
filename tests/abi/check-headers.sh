#!/usr/bin/env bash
# Header check (libgit2 tests/headertest): every public header compiles alone,
# as the first and only include of an empty translation unit, as strict C11
# and as C++11 (which proves the SAGA_BEGIN_DECL/END_DECL wrappers parse).
# With a library directory it also links a C++ program against libsaga.so,
# which proves the extern "C" linkage is right.
#   usage: check-headers.sh INCLUDE_DIR [DIR_WITH_libsaga.so]
#
# -D_POSIX_C_SOURCE=200809L: engine.h includes <uv.h>, and uv.h itself needs
# POSIX types (pthread_rwlock_t) that strict -std=c11 hides. Programs that use
# -std=c11 need the same define (or -std=gnu11); see docs/getting-started.md.
set -euo pipefail
inc=$(cd "${1:?usage: check-headers.sh INCLUDE_DIR [LIBDIR]}" && pwd)
libdir=${2:-}
CC=${CC:-cc}
CXX=${CXX:-c++}
uvflags=$(pkg-config --cflags libuv 2>/dev/null || true)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cflags=(-std=c11 -D_POSIX_C_SOURCE=200809L -pedantic -Wall -Wextra -Werror
        -Wshadow -Wstrict-prototypes -Wmissing-prototypes)
cxxflags=(-std=c++11 -pedantic -Wall -Wextra -Werror -Wshadow)
n=0; failed=0
for h in "$inc"/saga/*.h; do
    name=$(basename "$h")
    printf '#include <saga/%s>\n' "$name" > "$work/t.c"
    cp "$work/t.c" "$work/t.cpp"
    if ! $CC "${cflags[@]}" -I"$inc" $uvflags -c "$work/t.c" -o "$work/t.o"; then
        echo "check-headers: saga/$name does not compile alone as C11" >&2
        failed=$((failed + 1))
    fi
    if ! $CXX "${cxxflags[@]}" -I"$inc" $uvflags -c "$work/t.cpp" -o "$work/t.o"; then
        echo "check-headers: saga/$name does not compile alone as C++11" >&2
        failed=$((failed + 1))
    fi
    n=$((n + 1))
done
[ $n -gt 0 ] || { echo "check-headers: no headers in $inc/saga" >&2; exit 1; }

if [ -n "$libdir" ]; then
    cat > "$work/link.cpp" <<'CPP'
#include <saga/saga.h>
#include <cstring>
int main()
{
    // Link-time proof of extern "C": these resolve only if the header
    // declared them with C linkage.
    if (saga_version() != SAGA_VERSION_NUMBER)
        return 1;
    return std::strcmp(saga_strerror(SAGA_EINVAL), "invalid argument") != 0;
}
CPP
    if ! $CXX "${cxxflags[@]}" -I"$inc" $uvflags "$work/link.cpp" \
            -L"$libdir" -lsaga -Wl,-rpath,"$libdir" -o "$work/link" ||
       ! "$work/link"; then
        echo "check-headers: a C++ program cannot link/run against $libdir/libsaga.so" >&2
        failed=$((failed + 1))
    fi
fi

if [ $failed -ne 0 ]; then
    echo "check-headers: $failed failure(s)" >&2
    exit 1
fi
echo "check-headers: $n headers compile alone as C11 and C++11${libdir:+; C++ link OK}"

#!/usr/bin/env bash
# Docs check: keeps README.md and docs/ honest as the headers change.
#  1. every SAGA_EXTERN function declared in include/saga/X.h is documented
#     in docs/api/X.md;
#  2. every saga_* / SAGA_* name the docs mention exists in a public header
#     (or is a CMake option/target);
#  3. every ```c block holding a whole program (int main) compiles against
#     the headers as strict C11; given the directory of a built libsaga.so,
#     it is also linked and run (no arguments, in an empty directory) and
#     must exit 0.
#   usage: check-docs.sh [REPO_ROOT [LIBDIR]]
set -euo pipefail
root=$(cd "${1:-$(dirname "$0")/../..}" && pwd)
libdir=${2:-}
[ -z "$libdir" ] || libdir=$(cd "$libdir" && pwd)
CC=${CC:-cc}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
status=0
docs=("$root/README.md" "$root"/docs/*.md "$root"/docs/api/*.md)

# 1. API coverage, header by header.
for h in "$root"/include/saga/*.h; do
    name=$(basename "$h" .h)
    page="$root/docs/api/$name.md"
    if [ ! -f "$page" ]; then
        echo "check-docs: docs/api/$name.md is missing (one page per public header)" >&2
        status=1
        continue
    fi
    for fn in $(tr '\n' ' ' < "$h" | grep -oE 'SAGA_EXTERN[^;]*;' |
                grep -oE 'saga_[a-z0-9_]+[[:space:]]*\(' | sed 's/[[:space:]]*($//' |
                sort -u); do
        if ! grep -qE "\\b$fn\\b" "$page"; then
            echo "check-docs: $fn (include/saga/$name.h) is not documented in docs/api/$name.md" >&2
            status=1
        fi
    done
done

# 2. Every name the docs use exists.
known="$work/known"
{
    cat "$root"/include/saga/*.h "$root/CMakeLists.txt"
    cat "$root"/examples/*/CMakeLists.txt 2>/dev/null || true
    cat "$root"/tests/*/CMakeLists.txt 2>/dev/null || true
    echo "saga_static saga_hello"
} | grep -oE '\b(saga|SAGA)_[A-Za-z0-9_]+' | sort -u > "$known"
for d in "${docs[@]}"; do
    [ -f "$d" ] || continue
    # README.md's "Renamed in" tables name the old names on purpose.
    for tok in $(sed '/^## Renamed in/,$d' "$d" |
                 grep -oE '\b(saga|SAGA)_[A-Za-z0-9_]*\*?' | sort -u); do
        case $tok in
        saga__*) # an internal name (docs/architecture.md): never public
            continue ;;
        *\* | *_) # a family such as SAGA_E*, SAGA_REC_* or SAGA_EV_
            grep -q "^${tok%\*}" "$known" && continue ;;
        *)
            grep -qx "$tok" "$known" && continue ;;
        esac
        echo "check-docs: ${d#$root/} mentions $tok, which no public header defines" >&2
        status=1
    done
done

# 3. Whole programs in ```c blocks compile.
uvflags=$(pkg-config --cflags libuv 2>/dev/null || true)
n=0
for d in "${docs[@]}"; do
    [ -f "$d" ] || continue
    awk -v out="$work/snip" '
        /^```c[[:space:]]*$/ { inblk = 1; k++; f = out "-" k ".c"; printf "" > f; next }
        /^```/ { if (inblk) close(f); inblk = 0; next }
        inblk { print >> f }
    ' "$d"
    for s in "$work"/snip-*.c; do
        [ -f "$s" ] || continue
        if grep -q 'int main' "$s"; then
            n=$((n + 1))
            if ! $CC -std=c11 -pedantic -Wall -Wextra -Werror -I"$root/include" \
                    $uvflags -c "$s" -o "$work/snip.o"; then
                echo "check-docs: a program in ${d#$root/} does not compile" >&2
                status=1
            elif [ -n "$libdir" ]; then
                mkdir -p "$work/run"
                if ! $CC "$work/snip.o" -L"$libdir" -lsaga -Wl,-rpath,"$libdir" \
                        -o "$work/run/prog" ||
                   ! (cd "$work/run" && ./prog > out.txt 2>&1); then
                    cat "$work/run/out.txt" >&2 2>/dev/null || true
                    echo "check-docs: a program in ${d#$root/} does not link or run" >&2
                    status=1
                fi
                rm -rf "$work/run"
            fi
        fi
        rm -f "$s"
    done
done

[ $status -eq 0 ] && echo "check-docs: API pages cover every public function; names exist; $n program(s) compile${libdir:+, link and run}"
exit $status

#!/usr/bin/env bash
# Docs check: keeps README.md and docs/ honest as the headers change.
#  1. every SAGA_EXTERN function declared in include/saga/X.h is documented
#     in docs/api/X.md, and its own /** */ comment in the header (the one
#     right above it, blank lines aside) has an Ownership: and a Since: line
#     (docs/api/README.md, "Doc comments");
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

# 1b. Each exported function's header comment says Ownership: and Since:.
for h in "$root"/include/saga/*.h; do
    while IFS=$'\t' read -r fn line miss; do
        echo "check-docs: $fn (include/saga/$(basename "$h"):$line) lacks$miss (docs/api/README.md, \"Doc comments\")" >&2
        status=1
    done < <(awk '
        function check(   fn, miss) {
            if (match(decl, /saga_[a-z0-9_]+[ \t]*\(/)) {
                fn = substr(decl, RSTART, RLENGTH); sub(/[ \t]*\($/, "", fn)
                miss = ""
                if (doc !~ /Ownership:/) miss = miss " Ownership:"
                if (doc !~ /Since:/) miss = miss " Since:"
                if (doc == "") miss = " a /** */ comment of its own"
                if (miss != "") printf "%s\t%d\t%s\n", fn, dline, miss
            }
            decl = ""; indecl = 0; doc = ""
        }
        indoc { doc = doc "\n" $0; if ($0 ~ /\*\//) indoc = 0; next }
        indecl { decl = decl " " $0; if ($0 ~ /;/) check(); next }
        /^[ \t]*\/\*\*/ { doc = $0; indoc = ($0 !~ /\*\//); next }
        /^[ \t]*SAGA_EXTERN/ {
            decl = $0; dline = FNR; indecl = 1
            if ($0 ~ /;/) check()
            next
        }
        /^[ \t]*$/ { next }
        { doc = "" } # anything else between a comment and its declaration
    ' "$h")
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

[ $status -eq 0 ] && echo "check-docs: API pages cover every public function; every export says Ownership: and Since:; names exist; $n program(s) compile${libdir:+, link and run}"
exit $status

#!/usr/bin/env bash
# Exported-symbol check (jansson's check-exports): the dynamic symbols of
# libsaga.so must equal tests/abi/exports.txt, and all must start with saga_.
# A symbol that appears here by accident is ABI we would have to keep; one
# that disappears breaks every program linked against the old library.
#   usage: check-exports.sh path/to/libsaga.so [exports.txt [more.txt ...]]
# An optional plug-in's symbols are in a list of their own
# (exports-postgres.txt), passed only when the plug-in is built.
# After an intended API change: bash tests/abi/update-exports.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/exports.sh"
so=${1:?usage: check-exports.sh path/to/libsaga.so [exports.txt]}
shift
lists=("$@")
[ ${#lists[@]} -gt 0 ] || lists=("$here/exports.txt")
list=${lists[0]}
[ -f "$so" ] || { echo "check-exports: $so not found" >&2; exit 1; }

actual=$(mktemp); trap 'rm -f "$actual"' EXIT
saga_list_exports "$so" > "$actual"
status=0

bad=$(grep -v '^saga_' "$actual" || true)
if [ -n "$bad" ]; then
    echo "check-exports: exported symbols without the saga_ prefix" \
         "(make them static, or saga__ and not SAGA_EXTERN):" >&2
    echo "$bad" | sed 's/^/  /' >&2
    status=1
fi

if ! diff -u --label "expected ($list)" --label "actual ($so)" \
        <(cat "${lists[@]}" | LC_ALL=C sort -u) "$actual" >&2; then
    echo "check-exports: the exported symbols differ from tests/abi/exports.txt" \
         "(- missing, + new). If the change is intended, run:" \
         "bash tests/abi/update-exports.sh" >&2
    status=1
fi

# Informational: functions declared SAGA_EXTERN in the public headers that the
# library does not export yet (not implemented, or missing SAGA_EXTERN).
incdir="$here/../../include/saga"
if [ -d "$incdir" ]; then
    declared=$(cat "$incdir"/*.h | tr '\n' ' ' |
        grep -oE 'SAGA_EXTERN[^;]*;' |
        grep -oE '(saga_[a-z0-9_]+)[[:space:]]*\(' |
        sed 's/[[:space:]]*($//' | LC_ALL=C sort -u)
    missing=$(LC_ALL=C comm -23 <(echo "$declared") "$actual" | sed '/^$/d')
    if [ -n "$missing" ]; then
        echo "check-exports: note: declared in include/saga but not exported" \
             "($(echo "$missing" | wc -l)):" $missing
    fi
fi

[ $status -eq 0 ] && echo "check-exports: $(wc -l < "$actual") symbols, all as listed"
exit $status

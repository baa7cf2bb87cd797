#!/usr/bin/env bash
# The format check of the test command: clang-format --dry-run -Werror over
# every tracked C file, with the repo's .clang-format (Debian 12:
# clang-format 14). Prints the files that differ; exits 1 if any does.
# Reformat with:  git ls-files -z '*.c' '*.h' | xargs -0 clang-format -i
#   usage: bash scripts/check-format.sh [REPO_ROOT]
set -uo pipefail
root=$(cd "${1:-$(dirname "$0")/..}" && pwd)
cd "$root" || exit 1
CLANG_FORMAT=${CLANG_FORMAT:-clang-format}
bad=0
while IFS= read -r -d '' f; do
    if ! "$CLANG_FORMAT" --dry-run -Werror "$f" > /dev/null 2>&1; then
        echo "check-format: $f is not formatted"
        bad=$((bad + 1))
    fi
done < <(git ls-files -z '*.c' '*.h')
if [ "$bad" -gt 0 ]; then
    echo "check-format: $bad file(s) differ from .clang-format; run:"
    echo "  git ls-files -z '*.c' '*.h' | xargs -0 clang-format -i"
    exit 1
fi
echo "check-format: every C file matches .clang-format"

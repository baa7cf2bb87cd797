#!/usr/bin/env bash
# The demo command (README quick start):
#   sudo bash scripts/demo.sh
# Installs the Debian 12 packages, builds libsaga and its examples in build/,
# and runs the main job: examples/hello (build/examples/hello/saga_hello).
# Idempotent: re-running reuses build/.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
JOBS=${SAGA_JOBS:-2}

echo "==> installing dependencies (scripts/deps.sh)"
bash scripts/deps.sh

# A build/ configured from another checkout cannot be reused.
if [ -f build/CMakeCache.txt ] &&
    ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$root" build/CMakeCache.txt; then
    rm -rf build
fi
echo "==> configuring and building (build/)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSAGA_BUILD_EXAMPLES=ON \
    > /dev/null
cmake --build build -j"$JOBS" --target saga_hello

echo "==> running build/examples/hello/saga_hello"
exec build/examples/hello/saga_hello "$@"

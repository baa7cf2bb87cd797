#!/usr/bin/env bash
# The demo command (README quick start):
#   sudo bash scripts/demo.sh
# Installs the Debian 12 packages, builds libsaga and its examples in build/,
# and runs the main job: `saga-checkout demo`, the seed's checkout system
# (seven services, REST API) driven through HTTP, ending with its table.
# Arguments go to the demo (`--serve` keeps the server running).
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
cmake --build build -j"$JOBS" --target saga-checkout

# The demo keeps its databases in a temporary directory.
echo "==> running build/examples/checkout/saga-checkout demo"
exec ./build/examples/checkout/saga-checkout demo "$@"

#!/usr/bin/env bash
# Installs every Debian 12 package libsaga needs to build, test and benchmark.
# Idempotent: only missing packages are installed. Run as root (or via sudo).
set -euo pipefail
PKGS=(
  build-essential cmake pkg-config git
  libuv1-dev libsqlite3-dev sqlite3 libmsgpack-dev libcriterion-dev
  librdkafka-dev kcat libpq-dev postgresql
  libh2o-dev libssl-dev libjansson-dev
  libcurl4-openssl-dev curl jq wrk hyperfine python3
  clang clang-format libclang-rt-14-dev llvm
  chromium prometheus graphviz
)
# Node.js and npm drive the browser test (tests/operate/ci.sh: puppeteer-core,
# test-only). A Node from another source (nodesource ships npm inside its
# nodejs) is used as it is: Debian's npm package would conflict with it.
if ! command -v node > /dev/null || ! command -v npm > /dev/null; then
  PKGS+=(nodejs npm)
fi
missing=()
for p in "${PKGS[@]}"; do
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] ||
    missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#PKGS[@]} packages are installed"
else
  echo "deps: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq
  $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}"
fi

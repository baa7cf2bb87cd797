#!/usr/bin/env bash
# The test command (README quick start; .ci/run calls only this):
#   sudo bash scripts/test.sh
# Steps, stopping at the first failure:
#   1. scripts/deps.sh (Debian 12 packages; a no-op when all are installed)
#   2. configure + build build/ (everything: library, tests, examples, bench)
#   3. ctest in build/: unit, conformance and integration tests
#   4. configure + build build-asan/ (-DSAGA_SANITIZE=ON: ASan + UBSan,
#      -fno-sanitize-recover=undefined) and run the unit + conformance tests
#      with leak detection
#   5. the other builds a user may try, warnings as errors, tests included:
#      Debug and Release with gcc, Release with clang (built; the clang one
#      also runs the unit tests)
#   6. packaging checks (ctest -L packaging in build/): install + consumers
#      via pkg-config and find_package, exported symbols, header check
#   6b. the format check (scripts/check-format.sh; SAGA_CHECK_FORMAT=0
#      skips it)
#   7. extra suites that register themselves: tests/fuzz/run.sh 60 if it
#      exists, then every tests/*/ci.sh (run from the repo root)
# The last line is always "N passed, N failed": every ctest test counts as
# one suite, every other step as one step. Logs go to build-logs/.
# Idempotent: re-running reuses build/ and build-asan/. SAGA_JOBS (default 2)
# sets the build and ctest parallelism.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
JOBS=${SAGA_JOBS:-2}
logs=$root/build-logs
mkdir -p "$logs"

passed=0
failed=0
started=$(date +%s)

summary() {
    local t=$(($(date +%s) - started))
    echo "---- $((t / 60))m$((t % 60))s; logs in build-logs/"
    echo "$passed passed, $failed failed"
}

fail() {
    echo
    echo "FAILED: $*" >&2
    summary
    exit 1
}

banner() { printf '\n==> %s\n' "$*"; }

# step NAME CMD...: one counted step; its output goes to the console and to
# build-logs/NAME.log.
step() {
    local name=$1
    shift
    banner "$name"
    if "$@" 2>&1 | tee "$logs/$name.log"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        fail "step '$name' failed (log: build-logs/$name.log)"
    fi
}

# quiet_step NAME CMD...: like step, for chatty suites (a fuzzer prints
# thousands of lines): the console gets the last lines and any sanitizer or
# failure summary; the whole output is in build-logs/NAME.log.
quiet_step() {
    local name=$1
    shift
    banner "$name (output in build-logs/$name.log)"
    if "$@" > "$logs/$name.log" 2>&1; then
        tail -n 5 "$logs/$name.log"
        passed=$((passed + 1))
    else
        grep -E 'SUMMARY:|ERROR:|runtime error:|FAILED|Test unit written' \
            "$logs/$name.log" | head -n 40
        echo "--- last lines of build-logs/$name.log:"
        tail -n 30 "$logs/$name.log"
        failed=$((failed + 1))
        fail "step '$name' failed (log: build-logs/$name.log)"
    fi
}

# ctest_step NAME BUILD_DIR CTEST_ARGS...: counts each ctest test.
ctest_step() {
    local name=$1 dir=$2
    shift 2
    banner "$name"
    ctest --test-dir "$dir" --output-on-failure -j"$JOBS" "$@" 2>&1 |
        tee "$logs/$name.log"
    local rc=${PIPESTATUS[0]}
    local line total nfail
    line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' \
        "$logs/$name.log" | tail -n 1)
    if [ -n "$line" ]; then
        total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<< "$line")
        nfail=$(sed -E 's/.*passed, ([0-9]+) tests? failed.*/\1/' <<< "$line")
    elif grep -q 'No tests were found' "$logs/$name.log"; then
        total=0
        nfail=0
    else
        total=1
        nfail=1
    fi
    passed=$((passed + total - nfail))
    failed=$((failed + nfail))
    criterion_totals "$dir"
    if [ "$rc" -ne 0 ] || [ "$nfail" -ne 0 ]; then
        fail "$name: $nfail of $total test suites failed (log: build-logs/$name.log)"
    fi
}

# Criterion prints its synthesis on stderr; ctest keeps every test's output
# in LastTest.log. Sum it for an informational line.
criterion_totals() {
    local f
    f=$(ls -t "$1"/Testing/Temporary/LastTest*.log 2>/dev/null | head -n 1)
    [ -n "$f" ] || return 0
    grep -ho 'Synthesis: Tested: [0-9]* | Passing: [0-9]* | Failing: [0-9]* | Crashing: [0-9]*' "$f" |
        awk -F'[:|]' '{ t += $3; p += $5; f += $7; c += $9 }
            END { if (NR) printf "(Criterion: %d suites, %d tests, %d passing, %d failing, %d crashing)\n", NR, t, p, f, c }'
}

# A build dir configured from another checkout (a copied tree) cannot be
# reused: CMake refuses it. Start it afresh.
fresh_build_dir() {
    local cache=$1/CMakeCache.txt
    if [ -f "$cache" ] &&
        ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$root" "$cache"; then
        echo "removing $1 (configured for another source tree)"
        rm -rf "$1"
    fi
}

step deps bash scripts/deps.sh

fresh_build_dir build
step configure cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSAGA_WERROR=ON -DSAGA_SANITIZE=OFF -DSAGA_BUILD_TESTS=ON -DSAGA_BUILD_EXAMPLES=ON \
    -DSAGA_BUILD_BENCH=ON
step build cmake --build build -j"$JOBS"
ctest_step tests build -LE packaging

fresh_build_dir build-asan
step asan-configure cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSAGA_WERROR=ON -DSAGA_SANITIZE=ON -DSAGA_BUILD_TESTS=ON -DSAGA_BUILD_EXAMPLES=OFF \
    -DSAGA_BUILD_BENCH=OFF
step asan-build cmake --build build-asan -j"$JOBS"
# LeakSanitizer cannot run under ptrace or some container seccomp profiles;
# there it dies on every process. Probe once, and say loudly if it is off.
lsan_works() {
    local d
    d=$(mktemp -d)
    printf 'int main(void) { return 0; }\n' > "$d/p.c"
    cc -fsanitize=address "$d/p.c" -o "$d/p" 2>/dev/null &&
        ASAN_OPTIONS=detect_leaks=1 "$d/p" > /dev/null 2>&1
    local rc=$?
    rm -rf "$d"
    return $rc
}
leaks=1
if ! lsan_works; then
    echo "WARNING: LeakSanitizer does not work in this environment (ptrace?);" \
         "the sanitizer pass runs without leak detection" >&2
    leaks=0
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=$leaks:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
ctest_step asan-tests build-asan -L '^(unit|conformance)$'
unset ASAN_OPTIONS UBSAN_OPTIONS

# build_variant DIR CC BUILD_TYPE [ALL]: one more configuration, the library
# and its tests built (ALL: the examples and benchmarks too).
build_variant() {
    local dir=$1 cc=$2 type=$3 all=${4:+ON}
    fresh_build_dir "$dir"
    CC=$cc cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" -DSAGA_WERROR=ON \
        -DSAGA_BUILD_TESTS=ON -DSAGA_BUILD_EXAMPLES=${all:-OFF} \
        -DSAGA_BUILD_BENCH=${all:-OFF} > /dev/null && cmake --build "$dir" -j"$JOBS"
}
# Release with gcc builds everything: optimisation brings warnings of its
# own (-Wformat-truncation) that a user's default build would meet.
quiet_step build-gcc-release build_variant build-variants/gcc-release gcc Release all
quiet_step build-gcc-debug build_variant build-variants/gcc-debug gcc Debug
quiet_step build-clang-release build_variant build-variants/clang-release clang Release
ctest_step clang-release-unit build-variants/clang-release -L '^(unit|conformance)$'

ctest_step packaging build -L packaging

# The format check (clang-format --dry-run -Werror over the tree, with the
# checked-in .clang-format). On by default; SAGA_CHECK_FORMAT=0 skips it.
if [ "${SAGA_CHECK_FORMAT:-1}" != 0 ]; then
    quiet_step format bash scripts/check-format.sh
fi

if [ -f tests/fuzz/run.sh ]; then
    quiet_step fuzz sh tests/fuzz/run.sh 60
fi
for ci in tests/*/ci.sh; do
    [ -f "$ci" ] || continue
    quiet_step "extra-$(basename "$(dirname "$ci")")" bash "$ci"
done

banner "done"
summary

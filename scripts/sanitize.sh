#!/usr/bin/env bash
# Builds the engine and its tests with AddressSanitizer + UndefinedBehaviorSanitizer (g++,
# -O1, frame pointers kept) under build-asan/ and runs the whole CTest suite; any finding stops
# the test that hit it (halt_on_error) and fails this script.
#   scripts/sanitize.sh [extra ctest args]      e.g. scripts/sanitize.sh -R Checkpoint
# EQUIVAE_ASAN_DIR overrides the build directory; EQUIVAE_JOBS the build/test parallelism.
set -euo pipefail
cd "$(dirname "$0")/.."
script=sanitize
source scripts/common.sh

build_dir=${EQUIVAE_ASAN_DIR:-build-asan}
jobs=${EQUIVAE_JOBS:-$(nproc)}
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -O1 -g"
start=$(date +%s)
configure_once "$build_dir" cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_COMPILER=g++ \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DEQUIVAE_BUILD_BENCH=OFF
build_quietly "$build_dir" -j"$jobs"
built=$(date +%s)
echo "sanitize: built $build_dir in $((built - start)) s"

# detect_leaks: LeakSanitizer on too. OpenMP stays at one thread per test (CTest runs tests
# side by side). print_stacktrace: UBSan's report shows where.
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export OMP_NUM_THREADS=1
status=0
# --timeout: the limit of every test without its own (a hung one fails, not the whole job).
ctest --test-dir "$build_dir" --output-on-failure --timeout 1500 -j"$jobs" "$@" || status=$?
echo "sanitize: tests took $(($(date +%s) - built)) s (whole stage $(($(date +%s) - start)) s)"
exit $status

#!/usr/bin/env bash
# Builds the tools and the tests of the host's threads with ThreadSanitizer (g++, -O1, frame
# pointers kept) under build-tsan/ and runs them: the background checkpoint writer, stop
# requests by signal, the data loaded beside the backend's start, the metrics logs, resume and
# the command-line runs. Any data race fails the test that met it.
#   scripts/tsan.sh [extra ctest args]      e.g. scripts/tsan.sh -R Interrupt
# EQUIVAE_TSAN_DIR overrides the build directory; EQUIVAE_JOBS the build/test parallelism.
#
# What ThreadSanitizer cannot follow is left out, so that every report is one to fix:
#  - the CUDA emulator (kernels/emu; tests named Emu, Cuda, emulated, OnADevice, and two
#    Divergence cases that also run it): one Boost.Context fiber per CUDA thread, whose
#    switches it does not see; its shadow call stacks overflow and the test aborts. The
#    trainer's sampling of the next device window on a worker thread runs only there.
#  - CUDA and oneDNN, not looked for: nvcc is off the PATH, and oneDNN's JIT and thread pool
#    are not instrumented.
#  - OpenMP's threads: libgomp is not instrumented, so its barriers are invisible and every
#    parallel loop would be reported. OMP_THREAD_LIMIT=1 caps every team at one thread (the
#    cases of test_threads, which compare thread counts, then skip), and
#    cli_openmp_num_threads_capped, which expects its own cap's note, is left out.
#  - the kernels' own tests (ops, GEMMs, convolutions): no threads but OpenMP's.
set -euo pipefail
cd "$(dirname "$0")/.."
script=tsan
source scripts/common.sh

build_dir=${EQUIVAE_TSAN_DIR:-build-tsan}
jobs=${EQUIVAE_JOBS:-$(nproc)}
flags="-fsanitize=thread -fno-omit-frame-pointer -O1 -g"
targets=(train_mnist train_svhn reproduce figures embed classify make_svhn_files dump_step
         test_checkpoint test_classifier test_conv_model test_epoch_overhead test_figures
         test_file_safety test_flags test_fuzz_regressions test_idx_dataset test_image_files
         test_interrupt test_model test_resume test_sampler test_semisupervised
         test_svhn_dataset test_threads)
start=$(date +%s)
configure_once "$build_dir" env -u CUDACXX PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_COMPILER=g++ \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" \
  -DEQUIVAE_BUILD_BENCH=OFF -DCMAKE_DISABLE_FIND_PACKAGE_dnnl=ON
target_args=()
for t in "${targets[@]}"; do target_args+=(--target "$t"); done
build_quietly "$build_dir" -j"$jobs" "${target_args[@]}"
built=$(date +%s)
echo "tsan: built $build_dir in $((built - start)) s"

# exitcode: a test whose process saw a race fails even when it caught the output.
export TSAN_OPTIONS="halt_on_error=0:exitcode=66:second_deadlock_stack=1${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
export OMP_NUM_THREADS=1 OMP_THREAD_LIMIT=1
excluded='_NOT_BUILT|Emu|Cuda|emulated|OnADevice|AnUpdateGoneNonFiniteStopsAtItsStep|ALearningRateThatOverflowsAdamsMoment|cli_openmp_num_threads_capped'
status=0
ctest --test-dir "$build_dir" --output-on-failure --timeout 1500 -j"$jobs" -E "$excluded" "$@" ||
  status=$?
echo "tsan: tests took $(($(date +%s) - built)) s (whole stage $(($(date +%s) - start)) s)"
exit $status

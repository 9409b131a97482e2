#!/usr/bin/env bash
# The one prepared GPU check (docs/cuda-backend.md): the CUDA backend's tests on the GPU, the op and
# step benchmarks, a 40-epoch supervised Fashion-MNIST run, the PyTorch/JAX peers, and
# compute-sanitizer; everything written under a results folder plus one markdown summary.
#
# Two steps, because the GPU machine has nvcc but not this project's Debian libraries
# (OpenBLAS, Boost.Context, GoogleTest, Google Benchmark) and cannot fetch them:
#
#  1. here, on the development machine (needs nvcc, no GPU):
#       bench/gpu_check.sh --prepare
#     builds build-gpu/ (sm_80 + sm_90, portable x86-64 host code) and packs what the GPU run
#     needs into build-gpu-pack/ (binaries, the shared libraries the GPU machine lacks,
#     xz-compressed, and Fashion-MNIST when /usr/share/datasets/fashion-mnist exists); both
#     folders are ignored by git (/build*/).
#  2. on the GPU machine, from the repository root, carrying build-gpu-pack:
#       bench/gpu_check.sh            (results in $OUT when set, else bench/results/gpu-check)
#     Without a pack it configures and builds in build-gpu/ itself, which works only where
#     the project's dependencies are installed.
#
# Budget: each stage under its own timeout, and all of them under BUDGET_S seconds (default
# 540, under the device tool's 600 s per command): a stage gets at most what is left of it, less
# 20 s for the summary, and is skipped when nothing is — so the summary is always written. A
# failing stage is logged and the rest still run.
# Exit status: 0, 1 when the GPU tests failed (or were not built), 2 when they were skipped
# (no usable GPU).
# Stages run in the order STAGES gives; the default puts first what the issues ask a GPU for:
#   info tests step conv persistent peers peers_svhn train   the GPU tests; the headline steps
#       (supervised, semi-supervised, B = 10,240 beside its GEMMs alone, SVHN on cuDNN and
#       lowered to GEMMs), each SVHN convolution layer alone both ways, each of the step's GEMM
#       shapes in cuBLAS, split small GEMMs and one persistent chain of them (what a grid
#       barrier costs against a kernel boundary), and the PyTorch/JAX
#       peers (MNIST, SVHN) on the same GPU; the 40-epoch Fashion-MNIST run on the default
#       route (also validated once, after the last epoch)
#   routes fp32 train_routes chains kernels  every lever route of docs/cuda-levers.md (the
#       summary names the fastest), strict FP32, the 40-epoch run on the lever routes, the
#       GEMM chains, every kernel alone
#   profile sanitizer peers_semi emulated    Nsight Compute per kernel, compute-sanitizer,
#       the semi-supervised peers, the emulated suite on this CPU
# ("bench" stands for step routes fp32 chains kernels.) A session's device time (~15 minutes,
# the machine's start-up included) holds one full call, not two: make it one call; should the
# budget run out, the summary names the skipped stages, and a second call on the same warm
# machine with only those uses what is left — its figures come from the same GPU; name
# "step" too (e.g. STAGES="step sanitizer peers_semi") for the peers' rows to show the engine's
# step beside them; each peer stage runs each framework's fastest mode (PEERS_FIRST=2, the
# default here; PEERS_FIRST=6 runs every mode).
# Under the device tool ($OUT set) every result but the summary and the log is packed into
# all-results.tar.gz (the tool returns at most 8 files).
# shellcheck disable=SC2317  # the stages are functions called through their names
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
PACK="${GPU_PACK:-$ROOT/build-gpu-pack}"
BUILD="${GPU_BUILD:-$ROOT/build-gpu}"

# ---------------------------------------------------------------------------- --prepare
prepare() {
  local jobs="${JOBS:-2}"
  command -v nvcc >/dev/null || { echo "gpu_check --prepare: nvcc not found" >&2; return 1; }
  # RelWithDebInfo with our own flags: the top CMakeLists forces -march=native on Release,
  # and the GPU machine's CPU may lack this one's instructions. Without oneDNN: the CPU
  # convolutions and GEMMs it would speed up serve the GPU checks only as references, and its
  # library (tens of MB) would crowd the pack.
  nice -n 19 cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEQUIVAE_CUDA=ON \
    -DCMAKE_DISABLE_FIND_PACKAGE_dnnl=ON \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -DNDEBUG" \
    -DCMAKE_CUDA_FLAGS_RELWITHDEBINFO="-O3 -DNDEBUG" >/dev/null || return 1
  local targets=(test_cuda_backend_gpu test_cuda_backend train_mnist bench_cuda_step
    bench_gemm_chains)
  local optional known
  # The target list read once: `cmake ... | grep -q` under pipefail fails whenever grep stops
  # reading early (cmake then dies of SIGPIPE), which kept these optional targets out of packs.
  known="$(cmake --build "$BUILD" --target help)"
  for optional in bench_cuda_kernels test_cuda_kernels_gpu test_inference_cuda_gpu \
    test_small_gemm_gpu test_small_gemm_chain_gpu; do
    if grep -q "^\.\.\. $optional\$" <<<"$known"; then
      targets+=("$optional")
    fi
  done
  echo "gpu_check --prepare: building ${targets[*]} in $BUILD (-j$jobs)"
  nice -n 19 cmake --build "$BUILD" -j "$jobs" --target "${targets[@]}" || return 1

  rm -rf "$PACK"
  mkdir -p "$PACK/bin" "$PACK/lib"
  local t exe lib
  for t in "${targets[@]}"; do
    exe="$(find "$BUILD" -type f -name "$t" -perm -u+x | head -n 1)"
    [[ -n "$exe" ]] && cp "$exe" "$PACK/bin/" && strip --strip-unneeded "$PACK/bin/$t"
  done
  # Shared libraries outside glibc and CUDA (the GPU machine has its own CUDA 13, and cuDNN in
  # its python3's nvidia-cudnn wheel: cuDNN loads its engine libraries at run time, which ldd
  # cannot see, so the pack must not hold a partial copy).
  for exe in "$PACK"/bin/*; do
    ldd "$exe" | awk '/=> \//{print $3}'
  done | sort -u | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so* | libm.so* | libmvec.so* | libpthread.so* | libdl.so* | librt.so* | ld-linux*) ;;
      libcuda.so* | libcudart.so* | libcublas* | libnvToolsExt* | libnvJitLink* | libcudnn*) ;;
      *) cp -L "$lib" "$PACK/lib/" ;;
    esac
  done
  tar -C "$PACK" -cJf "$PACK/lib.tar.xz" lib && rm -rf "${PACK:?}/lib"
  if [[ -d /usr/share/datasets/fashion-mnist ]]; then
    mkdir -p "$PACK/fashion-mnist"
    cp /usr/share/datasets/fashion-mnist/*-ubyte* "$PACK/fashion-mnist/"
  fi
  # The binaries hold this checkout's path (the bundled digits, the tests' data): the GPU run
  # links it to its own checkout when the two differ.
  echo "$ROOT" >"$PACK/source_dir"
  du -sh "$PACK"
  echo "gpu_check --prepare: done. On the GPU machine: bench/gpu_check.sh, carrying build-gpu-pack"
}

if [[ "${1:-}" == "--prepare" ]]; then
  prepare
  exit $?
fi

# ---------------------------------------------------------------------------- the GPU run
RESULTS="${OUT:-$ROOT/bench/results/gpu-check}"
# Packed into one archive at the end (below) only where the device tool runs it: OUT set to a
# folder that is empty now, so that every file in it at the end is this run's.
BUNDLE=0
if [[ -n "${OUT:-}" && -d "$OUT" && -z "$(ls -A "$OUT")" ]]; then BUNDLE=1; fi
mkdir -p "$RESULTS"
LOG="$RESULTS/gpu_check.log"
SUMMARY="$RESULTS/summary.md"
: >"$LOG"
DEFAULT_STAGES="info tests step conv persistent peers peers_svhn train routes fp32 train_routes chains kernels"
DEFAULT_STAGES+=" profile sanitizer peers_semi emulated"
STAGES="${STAGES:-$DEFAULT_STAGES}"
declare -A STATUS=()
tests_failed=0
ALONE=()  # GPU tests that failed in the whole run, each run again alone: what that said

BUDGET_S="${BUDGET_S:-540}"
# Each peer stage runs each framework's fastest mode (run_peers.sh's first two) unless told
# otherwise (PEERS_FIRST=6: all): the slower modes cost the budget 60–90 s a stage and no
# comparison the issues ask for.
export PEERS_FIRST="${PEERS_FIRST:-2}"
CHECK_START=$(date +%s)

log() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }
# run_stage NAME TIMEOUT_S COMMAND...: output appended to the log; status recorded. The
# timeout shrinks to what is left of BUDGET_S (less 20 s for the summary).
run_stage() {
  local name="$1" limit="$2"
  shift 2
  local left=$((BUDGET_S - ($(date +%s) - CHECK_START) - 20))
  if ((left < 5)); then
    STATUS[$name]="skipped: the ${BUDGET_S} s budget was spent"
    log "stage $name: ${STATUS[$name]}"
    return 124
  fi
  ((limit > left)) && limit=$left
  log "stage $name: $* (timeout ${limit}s)"
  local start rc
  start=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
  rc=$?
  local took=$(($(date +%s) - start))
  if [[ $rc -eq 0 ]]; then
    STATUS[$name]="ok (${took} s)"
  elif [[ $rc -eq 124 || $rc -eq 137 ]]; then
    STATUS[$name]="TIMEOUT after ${limit} s"
  else
    STATUS[$name]="FAILED rc=$rc (${took} s)"
  fi
  log "stage $name: ${STATUS[$name]}"
  return $rc
}

ORIGINAL_LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}"  # for python3 (the peers): not our libraries
# Where the binaries are: the carried pack, or a build made here.
BIN=""
if [[ -d "$PACK/bin" ]]; then
  BIN="$PACK/bin"
  if [[ -f "$PACK/lib.tar.xz" && ! -d "$PACK/lib" ]]; then
    mkdir -p /tmp/equivae-gpu-lib
    tar -C /tmp/equivae-gpu-lib -xJf "$PACK/lib.tar.xz" 2>>"$LOG" ||
      python3 -c "import tarfile,sys; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" \
        "$PACK/lib.tar.xz" /tmp/equivae-gpu-lib 2>>"$LOG"
  fi
  export LD_LIBRARY_PATH="/tmp/equivae-gpu-lib/lib:$PACK/lib:${LD_LIBRARY_PATH:-}"
  log "using the carried pack $PACK"
  # The pack's binaries read the bundled digits under the path they were built at.
  built_at="$(cat "$PACK/source_dir" 2>/dev/null)"
  if [[ -n "$built_at" && "$built_at" != "$ROOT" && ! -e "$built_at/data" ]]; then
    # A link (dangling, say) may be replaced; anything else there is left alone.
    if [[ ! -e "$built_at" || -L "$built_at" ]] && mkdir -p "$(dirname "$built_at")" 2>/dev/null &&
      ln -sfnT "$ROOT" "$built_at" 2>/dev/null && [[ -e "$built_at/data" ]]; then
      log "linked $built_at (where the pack was built) to $ROOT"
    else
      log "WARNING: the pack was built at $built_at and cannot link it here: the runs and" \
        "benchmarks that read the bundled digits will not find them"
    fi
  fi
else
  log "no pack at $PACK: configuring and building in $BUILD"
  if run_stage build 420 bash -c "cmake -S '$ROOT' -B '$BUILD' -DCMAKE_BUILD_TYPE=Release -DEQUIVAE_CUDA=ON \
      && cmake --build '$BUILD' -j \"\$(nproc)\" --target test_cuda_backend_gpu train_mnist \
         bench_cuda_step bench_gemm_chains"; then
    BIN="$RESULTS/.bin"
    mkdir -p "$BIN"
    for t in test_cuda_backend_gpu train_mnist bench_cuda_step bench_gemm_chains bench_cuda_kernels; do
      exe="$(find "$BUILD" -type f -name "$t" -perm -u+x | head -n 1)"
      [[ -n "$exe" ]] && ln -sf "$exe" "$BIN/$t"
    done
  fi
fi
# CUDA libraries: the toolkit's, else the pip wheels' (the machine's python3 has them).
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [[ -d "$d" ]] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"
done
# (python3 with the machine's own library path: the pack's libraries could break its imports.)
PIP_CUDA_LIBS="$(LD_LIBRARY_PATH="$ORIGINAL_LD_LIBRARY_PATH" timeout 30 python3 - 2>/dev/null <<'EOF'
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except Exception:
    roots = []
print(":".join(sorted({os.path.dirname(p) for r in roots for p in glob.glob(r + "/*/lib/*.so*")})))
EOF
)"
[[ -n "$PIP_CUDA_LIBS" ]] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$PIP_CUDA_LIBS"
has() { [[ -n "$BIN" && -x "$BIN/$1" ]]; }
# A shared library the binaries need that none of the paths above holds (libcudnn.so.9 in an
# unusual place, say) would stop every stage: look for each such one on the machine once.
if [[ -n "$BIN" ]]; then
  for lib in $(ldd "$BIN"/* 2>/dev/null | awk '/=> not found/{print $1}' | sort -u); do
    found="$(timeout 30 find / -xdev \( -path /proc -o -path /sys \) -prune -o -name "$lib" \
      -print -quit 2>/dev/null)"
    if [[ -n "$found" ]]; then
      LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$(dirname "$found")"
      export LD_LIBRARY_PATH
      log "found $lib at $found (added to LD_LIBRARY_PATH)"
    else
      log "WARNING: $lib, which the binaries need, is nowhere on this machine"
    fi
  done
fi

FASHION="${FASHION_DIR:-}"
if [[ -z "$FASHION" ]]; then
  for d in "$PACK/fashion-mnist" /usr/share/datasets/fashion-mnist; do
    [[ -d "$d" ]] && FASHION="$d" && break
  done
fi

# ---- the stages, each a function run in the order STAGES gives (the default puts the
# figures the issues ask for first: should the budget run out, what it leaves out is least
# needed).
stage_info() {
  # shellcheck disable=SC2016  # $1 and $b belong to the inner shell
  run_stage info 30 bash -c 'nvidia-smi; nvcc --version | tail -n 2; uname -a; nproc;
    for b in "$1"/*; do echo "== ldd $b"; ldd "$b" | grep -E "not found|cuda|cublas|cudnn|openblas"; done' \
    info "$BIN"
}

# The CUDA backend's tests on the GPU (they skip nothing when a device is present).
MAX_ALONE=5  # failed GPU tests run again alone, at most this many (each may take a minute)
stage_tests() {
  if has test_cuda_backend_gpu; then
    run_stage tests_gpu 120 env OMP_NUM_THREADS=1 "$BIN/test_cuda_backend_gpu" \
      --gtest_output="xml:$RESULTS/tests_gpu.xml" || tests_failed=1
    # A kernel that faults leaves the process's CUDA context unusable, so every test after it
    # fails too: each failed test runs again alone, which names the culprit(s).
    local failed_tests t n=0
    failed_tests=$(env LD_LIBRARY_PATH="$ORIGINAL_LD_LIBRARY_PATH" python3 - "$RESULTS/tests_gpu.xml" <<'EOF_FAILED' 2>/dev/null
import sys, xml.etree.ElementTree as ET
for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    if case.find("failure") is not None or case.find("error") is not None:
        print(f"{case.get('classname')}.{case.get('name')}")
EOF_FAILED
    )
    for t in $failed_tests; do
      if ((++n > MAX_ALONE)); then
        ALONE+=("$t: not run again alone (the first $MAX_ALONE failed tests were)")
        continue
      fi
      if run_stage "alone_${t//[^A-Za-z0-9]/_}" 60 env OMP_NUM_THREADS=1 \
        "$BIN/test_cuda_backend_gpu" --gtest_filter="$t"; then
        ALONE+=("$t: passes alone (it failed after an earlier test's fault)")
      else
        ALONE+=("$t: fails alone too")
      fi
    done
    local skipped
    skipped=$(grep -c "<skipped" "$RESULTS/tests_gpu.xml" 2>/dev/null)
    if [[ "${skipped:-0}" -gt 0 ]]; then
      STATUS[tests_gpu]="SKIPPED ($skipped tests): no usable GPU seen"
      log "WARNING: ${STATUS[tests_gpu]}"
      tests_failed=2
    fi
  else
    STATUS[tests_gpu]="not built"
    tests_failed=1
  fi
  if has test_cuda_kernels_gpu; then
    run_stage tests_kernels_gpu 90 "$BIN/test_cuda_kernels_gpu" || tests_failed=1
  fi
  if has test_inference_cuda_gpu; then
    run_stage tests_inference_gpu 90 env OMP_NUM_THREADS=1 "$BIN/test_inference_cuda_gpu" \
      || tests_failed=1
  fi
  if has test_small_gemm_gpu; then  # the tensor-core GEMM alone, every tail and layout
    run_stage tests_small_gemm_gpu 60 "$BIN/test_small_gemm_gpu" || tests_failed=1
  fi
  if has test_small_gemm_chain_gpu; then  # its persistent chain (a cooperative launch)
    run_stage tests_small_gemm_chain_gpu 60 "$BIN/test_small_gemm_chain_gpu" || tests_failed=1
  fi
}

# bench_stage NAME TIMEOUT BINARY JSON [--group REGEX]... [-- BINARY_ARGS...]: the benchmarks
# through bench/run_benchmarks.py, so that a kernel that faults (the CUDA context is then lost
# for the rest of its process), crashes or hangs costs only its own benchmark; groups run in
# the order given, each in processes of its own (the headline figures first).
bench_stage() {
  local name="$1" limit="$2" binary="$3" json="$4"
  shift 4
  local left=$((BUDGET_S - ($(date +%s) - CHECK_START) - 20))
  ((limit > left)) && limit=$left
  ((limit < 15)) && limit=15  # run_stage skips it when even that is not left
  rm -f "$json"
  run_stage "$name" "$limit" env LD_LIBRARY_PATH="$ORIGINAL_LD_LIBRARY_PATH" \
    python3 "$ROOT/bench/run_benchmarks.py" "$binary" --out "$json" --budget $((limit - 10)) \
    --stall 60 --library-path "$LD_LIBRARY_PATH" "$@"
  [[ -s "$json" ]] && return 0
  # Without the runner's JSON (no python3 there, say): the binary alone, as before it, on
  # the groups' benchmarks in its own order.
  local filter=""
  while [[ $# -gt 0 && "$1" != "--" ]]; do
    [[ "$1" == "--group" ]] && filter+="${filter:+|}$2" && shift
    shift
  done
  [[ $# -gt 0 ]] && shift
  run_stage "${name}_direct" "$limit" "$binary" --benchmark_filter="${filter:-.}" \
    --benchmark_out="$json" --benchmark_out_format=json "$@"
}

# The headline steps (TF32 allowed): supervised and semi-supervised MNIST at B = 160, the step
# at B = 10,240 and its GEMMs alone in cuBLAS, and the SVHN step, each on the default route and
# on the defaults before 2026-11-27 (levers:2), and SVHN with its convolutions lowered to GEMMs
# (levers:4) and autotuned (each convolution call on cuDNN or lowered, as timed), in one run;
# and the per-epoch state read-back a checkpoint is cut from, into pageable and page-locked
# host memory (BM_ReadState: the 40-epoch run's `ckpt` column).
SVHN_HEAD='^BM_SvhnGraphStep/semi:0/(autotuned:0/levers:[024]|autotuned:1/levers:0)/'
stage_step() {
  if has bench_cuda_step; then
    bench_stage bench_step_head 90 "$BIN/bench_cuda_step" "$RESULTS/bench_step_head.json" \
      --group '^BM_GraphStep/' --group '^BM_GemmFloor' --group "$SVHN_HEAD" \
      --group '^BM_ReadState/' -- --benchmark_min_time=0.3
  else
    STATUS[bench_step_head]="not built"
  fi
}

# Every lever route of docs/cuda-levers.md, the other SVHN variants, the eager steps and the
# ops alone (the headline benchmarks above are not run again).
stage_routes() {
  if has bench_cuda_step; then
    bench_stage bench_step 150 "$BIN/bench_cuda_step" "$RESULTS/bench_step.json" \
      --group '^BM_GraphStepGemmRoute/' \
      --group '^BM_SvhnGraphStep/(semi:1|semi:0/autotuned:1/levers:[1-9]|semi:0/autotuned:0/levers:[135-9])/' \
      --group '^BM_EagerStep' --group '^BM_SvhnEagerStep' --group '^BM_Op/' \
      -- --benchmark_min_time=0.3
  else
    STATUS[bench_step]="not built"
  fi
}

# Each SVHN convolution layer alone (B = 160), forward and backward, on cuDNN and lowered to
# GEMMs (CudaBackendOptions::conv_gemm): which layers the lowering wins.
stage_conv() {
  has bench_cuda_step || return 0
  bench_stage bench_conv 45 "$BIN/bench_cuda_step" "$RESULTS/bench_conv.json" \
    --group '^BM_ConvLayer/' -- --benchmark_min_time=0.2
}

# The graph steps again in strict FP32.
stage_fp32() {
  has bench_cuda_step || return 0
  EQUIVAE_BENCH_STRICT_FP32=1 bench_stage bench_step_fp32 45 "$BIN/bench_cuda_step" \
    "$RESULTS/bench_step_fp32.json" --group '^BM_GraphStep/' -- --benchmark_min_time=0.3
}

# Each GEMM shape of the step, 100 in a row: cuBLAS, the split small GEMM, and the same 100 as
# one persistent chain (on every block the GPU holds, and on one per SM); the three dense
# stacks' forward the same ways; and the supervised step with persistent chains (step routes
# 31, 32) beside the default (0) and the levers without them (30). The chains and routes
# stages time every route again.
stage_persistent() {
  if has bench_gemm_chains; then
    bench_stage bench_persistent 45 "$BIN/bench_gemm_chains" "$RESULTS/bench_persistent.json" \
      --group '^BM_GemmShape/route:[0345]/' --group '^BM_ForwardChain/[0356]/' \
      -- --benchmark_min_time=0.2
  fi
  if has bench_cuda_step; then  # the whole step with them, beside the default and route 30
    bench_stage bench_persistent_step 45 "$BIN/bench_cuda_step" \
      "$RESULTS/bench_persistent_step.json" --group '^BM_GraphStepGemmRoute/route:(0|30|31|32)/' \
      -- --benchmark_min_time=0.3
  fi
}

# The dense layers' GEMM chains on each route (fused DRELU_BGRAD, no split-K, the small GEMM):
# what the engine would save by taking them, each route checked against the engine's; and each
# of the step's GEMM shapes in cuBLAS, cuBLASLt and the small GEMM.
stage_chains() {
  has bench_gemm_chains || return 0
  bench_stage bench_chains 90 "$BIN/bench_gemm_chains" "$RESULTS/bench_chains.json" \
    -- --benchmark_min_time=0.3
}

stage_kernels() {  # every kernel alone, in bytes/s or FLOP/s
  has bench_cuda_kernels || return 0
  bench_stage bench_kernels 60 "$BIN/bench_cuda_kernels" "$RESULTS/bench_kernels.json" \
    -- --benchmark_min_time=0.2
}

# The 40-epoch supervised run on 55k Fashion-MNIST examples (5k validation), on the default
# route and then on the lever routes; and a 1-epoch run on the bundled digits whose ELBO should
# be the CPU's -245.86 give or take TF32.
declare -A TRAIN_SECONDS=()  # per run of the 40-epoch job: wall seconds
FASHION_RUNS=(train_fashion40 train_fashion40_validate_last train_fashion40_batch_chunks
  train_fashion40_autotuned train_fashion40_fused_relu train_fashion40_small_gemm
  train_fashion40_small_gemm_tuned train_fashion40_graph10)
# batch_chunks: the validation's passes in chunks of the batch's 160 rows, as before the
# default of 4,096 (its `val` column against the first run's).
declare -A FASHION_FLAGS=([train_fashion40]="" [train_fashion40_validate_last]="--validate-every 40"
  [train_fashion40_batch_chunks]="--inference-chunk 0"
  [train_fashion40_autotuned]="--autotune"
  [train_fashion40_fused_relu]="--fused-relu-backward"
  [train_fashion40_small_gemm]="--small-gemm --fused-relu-backward"
  [train_fashion40_small_gemm_tuned]="--small-gemm --fused-relu-backward --autotune"
  [train_fashion40_graph10]="--small-gemm --fused-relu-backward --steps-per-graph 10")
fashion_run() {
  local run="$1" start_ns
  start_ns=$(date +%s%N)
  # Its wall time only when it ran to the end (a skipped or failed run has none to show).
  run_stage "$run" 150 bash -c "set -o pipefail; '$BIN/train_mnist' --device cuda --epochs 40 \
    ${FASHION_FLAGS[$run]} --data '$FASHION' --out /tmp/equivae-$run 2>&1 | tee '$RESULTS/$run.log'" &&
    TRAIN_SECONDS[$run]=$(awk -v a="$start_ns" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
}
stage_train() {
  if ! has train_mnist; then
    STATUS[train_fashion40]="not built"
    return 0
  fi
  run_stage train_digits_1epoch 60 "$BIN/train_mnist" --device cuda --epochs 1 \
    --out /tmp/equivae-digits
  if [[ -n "$FASHION" ]]; then
    fashion_run train_fashion40
    cp /tmp/equivae-train_fashion40/metrics.csv "$RESULTS/fashion40_metrics.csv" 2>/dev/null
    fashion_run train_fashion40_validate_last  # issue 4's 40-epoch wall time, validated once
  else
    STATUS[train_fashion40]="skipped: no Fashion-MNIST (set FASHION_DIR or pack it)"
  fi
}
stage_train_routes() {  # the same run with the validation in the batch's chunks, GEMM
  # autotuning (its log names what the timing chose), the fused ReLU backward, the small GEMM
  # (untuned and autotuned), ten steps a graph
  [[ -n "$FASHION" ]] && has train_mnist || return 0
  local run
  for run in "${FASHION_RUNS[@]:2}"; do fashion_run "$run"; done
}

# profile_kernels NAME FILTER MIN_TIME CSV: Nsight Compute's device time of 150 kernels of
# bench_cuda_step's benchmarks FILTER (after the first 300 launches, clocks left alone).
profile_kernels() {
  run_stage "$1" 90 bash -c "ncu --clock-control none --metrics gpu__time_duration.sum \
    --launch-skip 300 --launch-count 150 --csv '$BIN/bench_cuda_step' \
    --benchmark_filter='$2' --benchmark_min_time=$3 >'$RESULTS/$4'"
}
# Per-kernel device time of eager steps; the SVHN step's kernels (issue 6: which of its
# convolutions, and which cuDNN kernels, hold its ~1 ms); and the B = 10,240 step's graph
# nodes, kernel by kernel (ncu profiles each node of a replayed graph): where it spends the
# time its GEMMs alone do not (issue 4's 60% of their rate).
stage_profile() {
  if command -v ncu >/dev/null && has bench_cuda_step; then
    profile_kernels profile '^BM_EagerStep' 0.2 ncu_eager_step.csv
    profile_kernels profile_svhn '^BM_SvhnEagerStep' 0.2 ncu_svhn_eager_step.csv
    profile_kernels profile_big 'BM_GraphStep/semi:0/k:1024/levers:0/' 0.05 \
      ncu_graph_step_b10240.csv
  else
    STATUS[profile]="skipped: ncu or bench_cuda_step missing"
  fi
}

# The PyTorch / JAX peers on the GPU (run_peers.sh runs the fastest modes first, so that a
# timeout keeps them): MNIST, the SVHN conv step (made-up data, beside BM_SvhnGraphStep), and
# the semi-supervised MNIST step (beside BM_GraphStep/semi:1).
peers_stage() {
  local name="$1" limit="$2" model="$3" file="$4"
  shift 4
  run_stage "$name" "$limit" env LD_LIBRARY_PATH="$ORIGINAL_LD_LIBRARY_PATH" PEERS_DEVICE=cuda \
    PEERS_MODEL="$model" PEERS_PY=python3 PYTHONUNBUFFERED=1 \
    "$ROOT/bench/peers/run_peers.sh" "$RESULTS/$file" "$@"
}
# (150 s each: the fastest modes come back within it, and the lever routes after them keep
# their time.)
stage_peers() { peers_stage peers 150 mnist peers_cuda.jsonl --steps 100 --warmup 10; }
stage_peers_svhn() { peers_stage peers_svhn 150 svhn peers_svhn_cuda.jsonl --steps 50 --warmup 10; }
stage_peers_semi() { peers_stage peers_semi 150 mnist-semi peers_semi_cuda.jsonl --steps 50 --warmup 10; }

# compute-sanitizer over the kernels (through the backend's GPU tests: every kernel runs).
stage_sanitizer() {
  if command -v compute-sanitizer >/dev/null && has test_cuda_backend_gpu; then
    local filter='*StepMatchesTheCpuBackend*:*SupervisedGraphSteps*:*DropoutAndFill*:*SampledNoise*'
    run_stage memcheck 60 compute-sanitizer --tool memcheck --error-exitcode 3 \
      "$BIN/test_cuda_backend_gpu" --gtest_filter="$filter"
    # The convolutions on their own (the sliced per-channel sums): memcheck instruments cuDNN's
    # kernels too, which may take long, and a timeout here leaves the verdict above standing.
    run_stage memcheck_conv 60 compute-sanitizer --tool memcheck --error-exitcode 3 \
      "$BIN/test_cuda_backend_gpu" --gtest_filter='*ConvolutionsMatchTheCpuBackend*'
    run_stage racecheck 60 compute-sanitizer --tool racecheck --error-exitcode 3 \
      "$BIN/test_cuda_backend_gpu" --gtest_filter='*SupervisedStepMatchesTheCpuBackend*'
  else
    STATUS[sanitizer]="skipped: compute-sanitizer or the GPU test binary missing"
  fi
}

# The emulated suite, as a check that the pack runs on this machine's CPU.
stage_emulated() {
  has test_cuda_backend || return 0
  run_stage tests_emulated 60 env OMP_NUM_THREADS=4 "$BIN/test_cuda_backend"
}

# "bench", as the benchmarks' stage was once named, stands for all of them.
expanded=""
for s in $STAGES; do
  case "$s" in
    bench) expanded+=" step routes fp32 chains kernels" ;;
    *) expanded+=" $s" ;;
  esac
done
for s in $expanded; do
  if declare -F "stage_$s" >/dev/null; then
    "stage_$s"
  else
    STATUS[$s]="unknown stage (known: $DEFAULT_STAGES)"
    log "stage $s: ${STATUS[$s]}"
  fi
done

# ---------------------------------------------------------------------------- summary
{
  echo "# GPU check $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Device: $(timeout 10 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo unknown)"
  echo
  echo "| stage | result |"
  echo "| --- | --- |"
  for k in "${!STATUS[@]}"; do echo "| $k | ${STATUS[$k]} |"; done | sort
  echo
  if [[ -f "$RESULTS/tests_gpu.xml" ]]; then
    echo "GPU tests: $(grep -o '<testsuites tests="[0-9]*" failures="[0-9]*" disabled="[0-9]*" errors="[0-9]*"' \
      "$RESULTS/tests_gpu.xml" | head -n 1)"
    echo
    for line in "${ALONE[@]}"; do echo "- $line"; done
    ((${#ALONE[@]})) && echo
  fi
  for run in "${FASHION_RUNS[@]}"; do
    [[ -n "${TRAIN_SECONDS[$run]:-}" ]] || continue
    echo "40-epoch supervised Fashion-MNIST run (55k train) ${FASHION_FLAGS[$run]:-with the defaults}:" \
      "${TRAIN_SECONDS[$run]} s wall, incl. data load and validation;"
    echo "last epoch: $(grep -E '^epoch +40' "$RESULTS/$run.log" | tail -n 1)"
    grep -E 'start-up|GEMM autotuning|test error' "$RESULTS/$run.log" | tail -n 3
    echo
  done
  python3 - "$RESULTS" <<'EOF' 2>/dev/null || echo "(python3 summary of the benchmarks failed; see the json files)"
import json, os, sys
res = sys.argv[1]
loaded = {}
def load(path):
    # A results file, or None when it is missing or unreadable (a stage killed mid-write):
    # one bad file must not cost the rest of the summary (said once, where first read).
    if path not in loaded:
        try:
            with open(path) as f:
                loaded[path] = json.load(f)
        except (OSError, ValueError) as e:
            if os.path.exists(path):
                print(f"({os.path.basename(path)} could not be read: {e})\n")
            loaded[path] = None
    return loaded[path]
def table(path, title):
    data = load(path)
    if data is None:
        return
    print(f"## {title}\n")
    print("| benchmark | label | per step / op | examples/s |")
    print("| --- | --- | --- | --- |")
    for b in data.get("benchmarks", []):
        if b.get("error_occurred"):
            print(f"| {b['name']} | {b.get('error_message','error')} | | |")
            continue
        per = b.get("step", b.get("op", b.get("GEMM", b.get("chain"))))
        per = f"{per * 1e6:.1f} us" if per is not None else f"{b['real_time']:.1f} {b['time_unit']}"
        ex = b.get("examples/s")
        label = b.get("label", "")
        if ex and b["name"].startswith("BM_Svhn"):  # issue 6 asks for the epoch
            label += f"; epoch of 70,000 images {70000 / ex:.2f} s"
        # the GEMM chains' counters, what autotuning saw on the routes that tune, how many
        # GEMMs ran DRELU_BGRAD on the fused-ReLU routes and how many outputs the small GEMM
        # wrote on its routes, and a single GEMM's rate
        for extra in ("graph nodes", "grad NMSE", "y NMSE", "tuned plans", "changed",
                      "heuristic us", "tuned us", "masks kept", "DRELU_BGRAD GEMMs", "DRELU GEMMs",
                      "small GEMMs", "chains", "FLOP/s", "bytes_per_second"):
            if extra in b:
                label += f"; {extra} {b[extra]:.3g}"
        print(f"| {b['name']} | {label} | {per} | {ex:,.0f} |" if ex else
              f"| {b['name']} | {label} | {per} | |")
    print()
table(os.path.join(res, "bench_step_head.json"), "CUDA backend: the headline steps (TF32 allowed)")
table(os.path.join(res, "bench_step.json"),
      "CUDA backend: the lever routes, SVHN variants, eager steps and ops (TF32 allowed)")
def fastest_route(path):
    # BM_GraphStepGemmRoute: the route to keep as the default (CudaBackendOptions)
    data = load(path)
    if data is None:
        return
    routes = [b for b in data.get("benchmarks", [])
              if b["name"].startswith("BM_GraphStepGemmRoute") and "step" in b]
    if not routes:
        return
    default = next((b for b in routes if "route:0" in b["name"]), routes[0])
    best = min(routes, key=lambda b: b["step"])
    print(f"Fastest step route: {best['name']} ({best.get('label', '')}): "
          f"{best['step'] * 1e6:.1f} us against the default's {default['step'] * 1e6:.1f} us "
          f"({default['step'] / best['step']:.2f}x)\n")
    print("The five fastest routes:\n")
    for b in sorted(routes, key=lambda b: b["step"])[:5]:
        print(f"- {b['step'] * 1e6:.1f} us: {b['name']} ({b.get('label', '')})")
    print()
fastest_route(os.path.join(res, "bench_step.json"))
table(os.path.join(res, "bench_step_fp32.json"), "CUDA backend, strict FP32")
table(os.path.join(res, "bench_conv.json"), "SVHN convolution layers alone (B = 160): cuDNN, and lowered to GEMMs")
table(os.path.join(res, "bench_persistent.json"), "Persistent GEMM chains: the step's GEMM shapes, 100 in a row, in cuBLAS (route 0), split small GEMMs (3), one persistent chain (4: every block the GPU holds; 5: one per SM); the dense stacks' forward in cuBLASLt (BM_ForwardChain/0), split small GEMMs (/3), one persistent chain (/5)")
table(os.path.join(res, "bench_persistent_step.json"), "The supervised step with persistent chains (routes 31, 32) beside the default (0) and the same levers without them (30)")
table(os.path.join(res, "bench_chains.json"), "Dense-layer GEMM chains per route (B = 160, TF32, one graph each)")
table(os.path.join(res, "bench_kernels.json"), "Kernels alone")
def engine_steps():
    # The engine's headline steps (seconds), by benchmark name, for the head-to-head rows.
    steps = {}
    for f in ("bench_step_head.json", "bench_step.json"):
        data = load(os.path.join(res, f)) or {}
        for b in data.get("benchmarks", []):
            if "step" in b and not b.get("error_occurred"):
                steps.setdefault(b["name"], b["step"])
    return steps
steps = engine_steps()
# Each peer table's engine rows: the default route, and for SVHN the convolutions lowered to
# GEMMs and autotuned too; the ratios are to the fastest of them (named above the table).
for file, title, engines, per_epoch in (
        ("peers_cuda.jsonl", "Peers on the same GPU (MNIST)",
         ["BM_GraphStep/semi:0/k:16/levers:0/real_time"], 0),
        ("peers_svhn_cuda.jsonl", "SVHN peers on the same GPU",
         ["BM_SvhnGraphStep/semi:0/autotuned:0/levers:0/real_time",
          "BM_SvhnGraphStep/semi:0/autotuned:0/levers:4/real_time",
          "BM_SvhnGraphStep/semi:0/autotuned:1/levers:0/real_time"], 70000 / 160),
        ("peers_semi_cuda.jsonl", "Semi-supervised MNIST peers on the same GPU",
         ["BM_GraphStep/semi:1/k:16/levers:0/real_time"], 0)):
    peers = os.path.join(res, file)
    if not os.path.exists(peers):
        continue
    print(f"## {title}\n")
    epoch = lambda ms: f"; a 70,000-image epoch {ms * per_epoch / 1e3:.2f} s" if per_epoch else ""
    timed = [(steps[e], e) for e in engines if e in steps]
    for step, engine in timed:
        print(f"The engine ({engine}): {step * 1e3:.4f} ms per step{epoch(step * 1e3)}\n")
    mine = min(timed)[0] if timed else None
    if len(timed) > 1:
        print(f"Ratios below: to the fastest, {min(timed)[1]}\n")
    print("| peer | ms per step (median) | the peer's time / the engine's | the rest |")
    print("| --- | ---: | ---: | --- |")
    for line in open(peers):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        named = ("framework", "mode", "matmul")  # framework: "torch 2.11.0+cu130", say
        name = " ".join(str(r[k]) for k in named if k in r) or str(r.get("peer", "peer"))
        ms = r.get("ms_per_step_median")
        ratio = f"{ms / (mine * 1e3):.2f}" if ms and mine else ""
        rest = ", ".join(f"{k}={v}" for k, v in r.items()
                         if k not in named + ("ms_per_step_median",))
        print(f"| {name} | {ms if ms is not None else ''}{epoch(ms) if ms else ''} | {ratio} | {rest} |")
    print()
EOF
  echo "Full log: gpu_check.log"
} >"$SUMMARY"
cat "$SUMMARY"
# The device tool brings back at most 8 files from $OUT (a run of 2026-11-27 lost its summary
# and 9 other files to that limit): there (BUNDLE, above: every file in $OUT is this run's),
# everything goes into one archive, kept beside the summary and the log.
if ((BUNDLE)); then
  archive="$(mktemp "${TMPDIR:-/tmp}/gpu_check_results.XXXXXX")"
  if tar czf "$archive" -C "$RESULTS" . && mv "$archive" "$RESULTS/all-results.tar.gz"; then
    find "$RESULTS" -mindepth 1 -maxdepth 1 ! -name summary.md ! -name gpu_check.log \
      ! -name all-results.tar.gz -exec rm -rf {} +
  else
    rm -f "$archive"
  fi
fi
exit "$tests_failed"

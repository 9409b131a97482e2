#!/usr/bin/env bash
# Side-by-side CPU comparison in one run: the engine's training step (Google Benchmark) and the
# PyTorch / JAX peers (bench/peers, installed into a venv by their own script), same model, same
# batch construction, same thread count.
#
#   bench/compare_cpu.sh [THREADS] [MODEL] [ROUNDS]
#     THREADS  default: every core
#     MODEL    mnist (default): the supervised step, B = 160; semi: the paper's semi-supervised
#              step (3,000 labels, U = 100, 8-D latents, m_max 4); svhn: the SVHN conv step
#     ROUNDS   default 3
#   → bench/results/{THREADS}thread[s]-{mnist,semi,svhn}-cpu-step.md (every round and the
#     medians, each one's ratio to the engine's) and the rounds' raw lines in
#     …-cpu-rounds.txt beside it; the title names the CPU, its vector ISA and core count.
#
# The runs are interleaved, ROUNDS times: the engine on its automatic routes and on OpenBLAS
# and im2col alone (EQUIVAE_CPU_GEMM=openblas EQUIVAE_CPU_CONV=im2col: the engine without
# oneDNN), each peer mode, and BM_GemmFloor in OpenBLAS and in oneDNN (a shared machine's fast
# or slow state shows in them, and the two tell CPUs of one model name apart: the same
# "AMD EPYC" ran oneDNN's GEMMs at 1.15× OpenBLAS's on one machine, 1.9× on another).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-$(nproc)}
model=${2:-mnist}
rounds=${3:-3}
case "$model" in
  mnist) bench='^BM_TrainStep/'; peers=("equivae_torch.py --mode eager" "equivae_torch.py --mode compile"
                                       "equivae_jax.py --mode step" "equivae_jax.py --mode epoch") ;;
  semi)
    bench='^BM_SemiSupervisedStep/'
    semi="--unlabelled 100 --labels 3000 --d-r 8 --d-v 8 --m-max 4"
    peers=("equivae_torch.py $semi --mode eager" "equivae_torch.py $semi --mode compile"
           "equivae_jax.py $semi --mode step" "equivae_jax.py $semi --mode epoch") ;;
  svhn)  # JAX's CPU convolutions are left out: far slower than the rest
    bench='^BM_SvhnTrainStep/-1/'; peers=("svhn_torch.py --mode eager" "svhn_torch.py --mode compile") ;;
  *) echo "compare_cpu.sh: MODEL must be mnist, semi or svhn, got '$model'" >&2; exit 2 ;;
esac
out=bench/results
mkdir -p "$out"
scripts/setup.sh
bench/peers/setup_venv.sh
machine="$(lscpu | sed -n 's/Model name: *//p'), $(nproc) cores"
# The vector ISA oneDNN's kernels take (its brgemm needs AVX-512); VP2INTERSECT on an AMD CPU
# marks Zen 5, whose 512-bit FMA units are twice as wide as Zen 4's.
flags=" $(sed -n 's/^flags[[:space:]]*: //p' /proc/cpuinfo | head -1) "
if [[ "$flags" == *" avx512f "* ]]; then isa="AVX-512"; elif [[ "$flags" == *" avx2 "* ]]; then isa="AVX2"; else isa="no AVX2"; fi
[[ "$flags" == *" avx512_vp2intersect "* && "$machine" == AMD* ]] && isa="$isa, Zen 5"
machine="$machine, $isa"
prefix="$out/${threads}thread$([[ "$threads" == 1 ]] || echo s)-$model-cpu"
log="$prefix-rounds.txt"
: >"$log"
engine_ms() {  # median of 3 repetitions of the benchmark $1, with the environment given after it
  local filter=$1 ms
  shift
  ms=$(env "$@" OMP_NUM_THREADS="$threads" build/bench/bench_train_step --benchmark_filter="$filter" \
    --benchmark_repetitions=3 --benchmark_report_aggregates_only=true 2>/dev/null |
    awk '/median/{print $2}')
  [[ -n "$ms" ]] || { echo "compare_cpu.sh: no figure from benchmark '$filter'" >&2; return 1; }
  echo "$ms"
}
for r in $(seq 1 "$rounds"); do
  ms=$(engine_ms "$bench" EQUIVAE_CPU_GEMM=auto EQUIVAE_CPU_CONV=auto)
  echo "$r engine $ms" | tee -a "$log"
  ms=$(engine_ms "$bench" EQUIVAE_CPU_GEMM=openblas EQUIVAE_CPU_CONV=im2col)
  echo "$r engine-without-oneDNN $ms" | tee -a "$log"
  for peer in "${peers[@]}"; do
    # A peer without a figure fails the pipeline (set -e, pipefail).
    # shellcheck disable=SC2086
    ms=$(cd bench/peers && .venv/bin/python $peer --device cpu --threads "$threads" --steps 30 \
      --warmup 5 2>/dev/null | tail -1 |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["ms_per_step_median"])')
    name=$(echo "$peer" | sed -E 's/^(equivae|svhn)_//; s/\.py.*--mode /-/')
    echo "$r ${name} $ms" | tee -a "$log"
  done
  ms=$(engine_ms BM_GemmFloor/onednn:0)
  echo "$r gemm-floor $ms" | tee -a "$log"
  ms=$(engine_ms BM_GemmFloor/onednn:1)
  echo "$r gemm-floor-onednn $ms" | tee -a "$log"
done
python3 - "$log" "$threads" "$machine" "$model" <<'PY' | tee "$prefix-step.md"
import statistics, sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
threads = sys.argv[2] + (" thread" if sys.argv[2] == "1" else " threads")
title = {"mnist": "supervised MNIST, B = 160",
         "semi": "semi-supervised MNIST, B = 160 + U = 100 (× 10 labels)",
         "svhn": "SVHN conv model, B = 160"}[sys.argv[4]]
print(f"### CPU training step, {title}, {threads} ({sys.argv[3]})\n")
round_names = list(dict.fromkeys(r for r, _, _ in rows))
names = list(dict.fromkeys(name for _, name, _ in rows))
median = {n: statistics.median(float(ms) for _, m, ms in rows if m == n) for n in names}
print("| ms / step | " + " | ".join(f"round {r}" for r in round_names) + " | median | vs engine |")
print("| --- |" + " ---: |" * (len(round_names) + 2))
for name in names:
    values = [float(ms) for _, n, ms in rows if n == name]
    ratio = "" if name.startswith("gemm-floor") else f"{median[name] / median['engine']:.2f}×"
    print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in values) +
          f" | {median[name]:.2f} | {ratio} |")
PY

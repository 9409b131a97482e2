#!/usr/bin/env bash
# Side-by-side CPU comparison in one run: the engine's training step (Google
# Benchmark) and the PyTorch / JAX peers (bench/peers, installed into a venv by
# their own script), same model, same batch construction, same thread count.
#   bench/compare_cpu.sh [THREADS]        → bench/results/cpu-step.md
#   bench/compare_cpu.sh THREADS semi     → bench/results/semi-cpu-step.md (the paper's
#                                            semi-supervised step: 3,000 labels, U = 100)
#   bench/compare_cpu.sh THREADS svhn [ROUNDS]
#                                         → bench/results/svhn-cpu-step.md: the SVHN conv
#       step, ROUNDS (3) interleaved rounds of the engine on each convolution route (im2col,
#       automatic) and PyTorch eager / torch.compile, each round's BM_GemmFloor beside it
#       (this machine's fast / slow state), then the medians
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-$(nproc)}
mode=${2:-}
out=bench/results
mkdir -p "$out"
scripts/setup.sh
machine="$(lscpu | sed -n 's/Model name: *//p')"
if [[ "$mode" == svhn ]]; then
  rounds=${3:-3}
  bench/peers/setup_venv.sh
  log="$out/svhn-cpu-rounds.txt"
  : >"$log"
  for r in $(seq 1 "$rounds"); do
    for route in im2col auto; do
      ms=$(EQUIVAE_CPU_CONV=$route OMP_NUM_THREADS=$threads build/bench/bench_train_step \
        --benchmark_filter='SvhnTrainStep/-1' --benchmark_repetitions=3 \
        --benchmark_report_aggregates_only=true | awk '/median/{print $2}')
      echo "$r engine-$route $ms" | tee -a "$log"
    done
    for mode in eager compile; do
      ms=$(cd bench/peers && .venv/bin/python svhn_torch.py --mode $mode --threads "$threads" \
        --steps 30 --warmup 5 2>/dev/null | tail -1 |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["ms_per_step_median"])')
      echo "$r torch-$mode $ms" | tee -a "$log"
    done
    ms=$(OMP_NUM_THREADS=$threads build/bench/bench_train_step --benchmark_filter=GemmFloor |
      awk '/BM_/{print $2}')
    echo "$r gemm-floor $ms" | tee -a "$log"
  done
  python3 - "$log" "$threads" "$machine" <<'PY' | tee "$out/svhn-cpu-step.md"
import statistics, sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
threads = sys.argv[2] + (" thread" if sys.argv[2] == "1" else " threads")
print(f"### CPU training step, SVHN conv model, B = 160, {threads} ({sys.argv[3]})\n")
names = list(dict.fromkeys(name for _, name, _ in rows))
print("| | " + " | ".join(f"round {r}" for r in dict.fromkeys(r for r, _, _ in rows)) + " | median |")
print("| --- |" + " ---: |" * (len(set(r for r, _, _ in rows)) + 1))
for name in names:
    values = [float(ms) for _, n, ms in rows if n == name]
    print(f"| {name} (ms) | " + " | ".join(f"{v:.1f}" for v in values) +
          f" | {statistics.median(values):.1f} |")
PY
  exit 0
fi
if [[ "$mode" == semi ]]; then
  OMP_NUM_THREADS=$threads build/bench/bench_train_step --benchmark_filter='BM_SemiSupervisedStep' \
    --benchmark_repetitions=3 --benchmark_format=json > "$out/engine-semi-step-cpu.json"
  PEERS_MODEL=mnist-semi bench/peers/run_peers.sh "$out/peers-semi-cpu.jsonl" --threads "$threads"
  python3 bench/compare_step.py "$out/engine-semi-step-cpu.json" "$out/peers-semi-cpu.jsonl" \
    --benchmark BM_SemiSupervisedStep \
    --title "CPU training step, semi-supervised MNIST, B = 160 + U = 100 (x 10 labels), $threads threads ($machine)" \
    | tee "$out/semi-cpu-step.md"
  exit 0
fi
OMP_NUM_THREADS=$threads build/bench/bench_train_step --benchmark_filter='BM_TrainStep' \
  --benchmark_repetitions=3 --benchmark_format=json > "$out/engine-step-cpu.json"
bench/peers/run_peers.sh "$out/peers-cpu.jsonl" --threads "$threads"
python3 bench/compare_step.py "$out/engine-step-cpu.json" "$out/peers-cpu.jsonl" \
  --title "CPU training step, supervised MNIST, B = 160, $threads threads ($machine)" \
  | tee "$out/cpu-step.md"

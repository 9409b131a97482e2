#!/usr/bin/env bash
# Side-by-side CPU comparison in one run: the engine's training step (Google
# Benchmark) and the PyTorch / JAX peers (bench/peers, installed into a venv by
# their own script), same model, same batch construction, same thread count.
#   bench/compare_cpu.sh [THREADS]        → bench/results/cpu-step.md
#   bench/compare_cpu.sh THREADS semi     → bench/results/semi-cpu-step.md (the paper's
#                                            semi-supervised step: 3,000 labels, U = 100)
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-$(nproc)}
semi=${2:-}
out=bench/results
mkdir -p "$out"
scripts/setup.sh
machine="$(lscpu | sed -n 's/Model name: *//p')"
if [[ "$semi" == semi ]]; then
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

#!/usr/bin/env bash
# Side-by-side CPU comparison in one run: the engine's training step (Google
# Benchmark) and the PyTorch / JAX peers (bench/peers, installed into a venv by
# their own script), same model, same batch construction, same thread count.
#   bench/compare_cpu.sh [THREADS]   → bench/results/cpu-step.md
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-$(nproc)}
out=bench/results
mkdir -p "$out"
scripts/setup.sh
OMP_NUM_THREADS=$threads build/bench/bench_train_step --benchmark_filter='BM_TrainStep' \
  --benchmark_repetitions=3 --benchmark_format=json > "$out/engine-step-cpu.json"
bench/peers/run_peers.sh "$out/peers-cpu.jsonl" --threads "$threads"
python3 bench/compare_step.py "$out/engine-step-cpu.json" "$out/peers-cpu.jsonl" \
  --title "CPU training step, supervised MNIST, B = 160, $threads threads ($(lscpu | sed -n 's/Model name: *//p'))" \
  | tee "$out/cpu-step.md"

#!/usr/bin/env bash
# Runs every peer mode and collects their final JSON lines.
#
#   bench/peers/run_peers.sh [OUT.jsonl] [extra flags for every script...]
#
#   OUT.jsonl   default bench/peers/results-cpu.jsonl (results-cuda.jsonl with
#               PEERS_DEVICE=cuda; results-svhn-cpu.jsonl / results-svhn-cuda.jsonl
#               with PEERS_MODEL=svhn); overwritten
#   extra flags e.g. --steps 30 --warmup 5 --threads 2 --data-dir DIR
#
# PEERS_MODEL=mnist (default): the dense MNIST model (equivae_torch.py,
#   equivae_jax.py); PEERS_MODEL=mnist-semi: its semi-supervised step (the same
#   scripts with --unlabelled 100 ...); PEERS_MODEL=svhn: the
#   conv SVHN model (svhn_torch.py, svhn_jax.py; --data-dir takes a directory
#   with train_32x32.mat).
# CPU (default): torch eager, torch compile, jax step-jit, jax epoch-jit.
# PEERS_DEVICE=cuda: torch compile-cudagraphs with TF32, jax epoch, torch eager,
#   jax step, torch compile-cudagraphs (FP32), torch compile, in that order (each
#   framework's fastest first, kept when a caller's timeout cuts the rest), all
#   with --device cuda (needs a CUDA torch and jax[cuda12] in the interpreter:
#   PEERS_GPU=1 for setup_venv.sh, or PEERS_PY, see below).
# PEERS_FIRST=N: only the first N modes of that order.
# PEERS_PY=/path/to/python: use that interpreter (must import torch, jax,
#   numpy) instead of creating/using bench/peers/.venv -- e.g. on a machine
#   without network access.
# A mode that fails is reported on stderr and skipped; the rest still run.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEVICE="${PEERS_DEVICE:-cpu}"
MODEL="${PEERS_MODEL:-mnist}"
case "$MODEL" in
  mnist) TORCH=equivae_torch.py; JAX=equivae_jax.py; OUT_DEFAULT="$HERE/results-$DEVICE.jsonl" ;;
  svhn) TORCH=svhn_torch.py; JAX=svhn_jax.py; OUT_DEFAULT="$HERE/results-svhn-$DEVICE.jsonl" ;;
  mnist-semi)  # the paper's semi-supervised MNIST step: 3,000 labels, U = 100, 8-D latents
    SEMI="--unlabelled 100 --labels 3000 --d-r 8 --d-v 8 --m-max 4"
    TORCH="equivae_torch.py $SEMI"; JAX="equivae_jax.py $SEMI"
    OUT_DEFAULT="$HERE/results-semi-$DEVICE.jsonl" ;;
  *) echo "run_peers.sh: PEERS_MODEL must be mnist, mnist-semi or svhn, got '$MODEL'" >&2
     exit 2 ;;
esac
if [[ -n "${PEERS_FIRST:-}" && ! "$PEERS_FIRST" =~ ^[1-9][0-9]*$ ]]; then
  echo "run_peers.sh: PEERS_FIRST must be a positive integer, got '$PEERS_FIRST'" >&2
  exit 2
fi
OUT="${1:-$OUT_DEFAULT}"
shift || true
if [[ "$DEVICE" == "cuda" ]]; then export PEERS_GPU="${PEERS_GPU:-1}"; fi

if [[ -n "${PEERS_PY:-}" ]]; then
  PY="$PEERS_PY"
else
  "$HERE/setup_venv.sh" || { echo "run_peers.sh: setup_venv.sh failed" >&2; exit 1; }
  PY="${PEERS_VENV:-$HERE/.venv}/bin/python"
fi

if [[ "$DEVICE" == "cuda" ]]; then
  # The engine's GEMMs take TF32 by default, as JAX's do on a GPU: PyTorch's best mode also
  # runs with TF32 allowed (its default is strict FP32).
  # The supervised models sample on the device too (--sampler device: no host copy per step,
  # as the JAX epoch peer and the engine); the semi-supervised one samples on the host only.
  DEVICE_SAMPLER=""
  [[ "$MODEL" != "mnist-semi" ]] && DEVICE_SAMPLER="--sampler device"
  # Each framework's fastest mode first (PyTorch's compiles for a minute): a caller's timeout
  # then cuts the slower ones.
  RUNS=("$TORCH --mode compile-cudagraphs --tf32 $DEVICE_SAMPLER"
        "$JAX --mode epoch"
        "$TORCH --mode eager"
        "$JAX --mode step"
        "$TORCH --mode compile-cudagraphs"
        "$TORCH --mode compile")
else
  RUNS=("$TORCH --mode eager"
        "$TORCH --mode compile"
        "$JAX --mode step"
        "$JAX --mode epoch")
fi

# PEERS_FIRST=N: only the first N modes (on a GPU: each framework's fastest, for N = 2).
if [[ -n "${PEERS_FIRST:-}" ]]; then RUNS=("${RUNS[@]:0:$PEERS_FIRST}"); fi

mkdir -p "$(dirname "$OUT")"
: > "$OUT"
echo "[peers] machine: $(lscpu 2>/dev/null | grep 'Model name' | sed 's/.*: *//'), $(nproc --all) cores; device=$DEVICE model=$MODEL" >&2
fail=0
for r in "${RUNS[@]}"; do
  echo "[peers] $r --device $DEVICE $*" >&2
  # shellcheck disable=SC2086
  line="$("$PY" "$HERE"/$r --device "$DEVICE" "$@" | tail -n 1)"
  if [[ "$line" == \{* ]]; then
    echo "$line"
    echo "$line" >> "$OUT"
  else
    echo "[peers] FAILED: $r" >&2
    fail=1
  fi
done
echo "[peers] results in $OUT" >&2
exit $fail

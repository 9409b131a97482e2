#!/usr/bin/env bash
# Runs every peer mode and collects their final JSON lines.
#
#   bench/peers/run_peers.sh [OUT.jsonl] [extra flags for every script...]
#
#   OUT.jsonl   default bench/peers/results-cpu.jsonl (results-cuda.jsonl with
#               PEERS_DEVICE=cuda); overwritten
#   extra flags e.g. --steps 30 --warmup 5 --threads 2 --data-dir DIR
#
# CPU (default): torch eager, torch compile, jax step-jit, jax epoch-jit.
# PEERS_DEVICE=cuda: torch eager, compile, compile-cudagraphs, jax step, jax
#   epoch, all with --device cuda (needs a CUDA torch and jax[cuda12] in the
#   interpreter: PEERS_GPU=1 for setup_venv.sh, or PEERS_PY, see below).
# PEERS_PY=/path/to/python: use that interpreter (must import torch, jax,
#   numpy) instead of creating/using bench/peers/.venv -- e.g. on a machine
#   without network access.
# A mode that fails is reported on stderr and skipped; the rest still run.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEVICE="${PEERS_DEVICE:-cpu}"
OUT="${1:-$HERE/results-$DEVICE.jsonl}"
shift || true
if [[ "$DEVICE" == "cuda" ]]; then export PEERS_GPU="${PEERS_GPU:-1}"; fi

if [[ -n "${PEERS_PY:-}" ]]; then
  PY="$PEERS_PY"
else
  "$HERE/setup_venv.sh" || { echo "run_peers.sh: setup_venv.sh failed" >&2; exit 1; }
  PY="${PEERS_VENV:-$HERE/.venv}/bin/python"
fi

if [[ "$DEVICE" == "cuda" ]]; then
  RUNS=("equivae_torch.py --mode eager"
        "equivae_torch.py --mode compile"
        "equivae_torch.py --mode compile-cudagraphs"
        "equivae_jax.py --mode step"
        "equivae_jax.py --mode epoch")
else
  RUNS=("equivae_torch.py --mode eager"
        "equivae_torch.py --mode compile"
        "equivae_jax.py --mode step"
        "equivae_jax.py --mode epoch")
fi

mkdir -p "$(dirname "$OUT")"
: > "$OUT"
echo "[peers] machine: $(lscpu 2>/dev/null | grep 'Model name' | sed 's/.*: *//'), $(nproc) cores; device=$DEVICE" >&2
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

#!/usr/bin/env bash
# Creates bench/peers/.venv with the peer frameworks (PyTorch, JAX, numpy).
# Idempotent: does nothing if the venv already imports torch, jax and numpy.
#
#   bench/peers/setup_venv.sh            # CPU: torch from the CPU-only index, jax[cpu]
#   PEERS_GPU=1 bench/peers/setup_venv.sh  # GPU: torch from PyPI (CUDA wheels), jax[cuda12]
#
# Env: PEERS_PYTHON (interpreter used to create the venv; default python3.11 /
# python3), PEERS_VENV (venv path; default bench/peers/.venv).
# The peers are installed only by this script, never by the project's setup.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${PEERS_VENV:-$HERE/.venv}"
GPU="${PEERS_GPU:-0}"

pick_python() {
  if [[ -n "${PEERS_PYTHON:-}" ]]; then echo "$PEERS_PYTHON"; return; fi
  for p in python3.11 python3.12 python3; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import venv, sys; assert sys.version_info >= (3, 10)' 2>/dev/null; then
      echo "$p"; return
    fi
  done
  echo "setup_venv.sh: need Python >= 3.10 with the venv module" >&2; exit 1
}

if [[ ! -x "$VENV/bin/python" ]]; then
  PY="$(pick_python)"
  echo "[peers] creating venv $VENV with $PY ($("$PY" --version 2>&1))" >&2
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
VPY="$VENV/bin/python"

have() { "$VPY" -c "import $1" >/dev/null 2>&1; }

if ! have numpy; then
  echo "[peers] installing numpy" >&2
  "$VPY" -m pip install -q numpy
fi

if ! have torch; then
  if [[ "$GPU" == "1" ]]; then
    echo "[peers] installing torch (PyPI, CUDA wheels)" >&2
    "$VPY" -m pip install -q torch
  else
    echo "[peers] installing torch from the CPU-only index" >&2
    if ! "$VPY" -m pip install -q --retries 1 --timeout 20 torch --index-url https://download.pytorch.org/whl/cpu; then
      echo "[peers] CPU index unreachable; installing torch from PyPI" >&2
      "$VPY" -m pip install -q torch
    fi
  fi
fi

if ! have jax; then
  if [[ "$GPU" == "1" ]]; then
    echo "[peers] installing jax[cuda12]" >&2
    "$VPY" -m pip install -q "jax[cuda12]"
  else
    echo "[peers] installing jax[cpu]" >&2
    "$VPY" -m pip install -q "jax[cpu]"
  fi
fi

"$VPY" - <<'PY' >&2
import numpy, torch, jax
print(f"[peers] numpy {numpy.__version__}, torch {torch.__version__} "
      f"(cuda build: {torch.version.cuda}), jax {jax.__version__}")
PY

#!/usr/bin/env bash
# Draws the learning curves and the 2-D latent plots (scripts/plot_figures.py) in a venv of
# its own, created on first use with matplotlib and umap-learn from PyPI; the engine itself
# needs neither. Arguments go to plot_figures.py:
#
#   scripts/plot_figures.sh --metrics runs/main/metrics.csv --embed runs/embed --out runs/plots
#
# Env: EQUIVAE_PLOT_VENV (default build/plot-venv), EQUIVAE_PLOT_PYTHON (the interpreter that
# creates it; default python3, which needs the venv module: Debian's python3-venv).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${EQUIVAE_PLOT_VENV:-$root/build/plot-venv}"
python="${EQUIVAE_PLOT_PYTHON:-python3}"

if ! "$venv/bin/python" -c "import matplotlib, umap" >/dev/null 2>&1; then
  if [[ ! -x "$venv/bin/python" ]]; then
    echo "plot_figures: creating $venv" >&2
    "$python" -m venv "$venv" || {
      echo "plot_figures: '$python -m venv' failed (Debian: apt-get install python3-venv)" >&2
      exit 1
    }
  fi
  echo "plot_figures: installing matplotlib and umap-learn into $venv" >&2
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q matplotlib umap-learn
fi
exec "$venv/bin/python" "$root/scripts/plot_figures.py" "$@"

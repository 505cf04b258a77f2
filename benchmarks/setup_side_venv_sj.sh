#!/usr/bin/env bash
# The side environment benchmarks/speed_float.py times SpikingJelly in (never a project dependency):
# Python 3.10, the newest torch/torchvision the package index offers, spikingjelly and what its
# ann2snn imports. Usage: bash benchmarks/setup_side_venv_sj.sh [/work/side-venv-sj]
set -euo pipefail
VENV="${1:-/work/side-venv-sj}"
PY="$(command -v python3.10 || ls "$(pyenv root 2>/dev/null || echo /nonexistent)"/versions/3.10*/bin/python3.10 2>/dev/null | head -1)"
[ -n "$PY" ] || { echo "python3.10 not found: install it (e.g. pyenv install 3.10)" >&2; exit 1; }
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install torch torchvision spikingjelly==0.0.0.0.14 numpy requests tqdm

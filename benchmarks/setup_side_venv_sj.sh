#!/usr/bin/env bash
# The side environment benchmarks/speed_float.py times SpikingJelly in (never a project dependency):
# Python 3.10, the newest torch/torchvision the package index offers, spikingjelly and what its
# ann2snn imports. Usage: bash benchmarks/setup_side_venv_sj.sh [/work/side-venv-sj]
set -euo pipefail
VENV="${1:-/work/side-venv-sj}"
PY=""
for c in python3.10 "$(pyenv root 2>/dev/null)"/versions/3.10.*/bin/python /usr/bin/python3.10; do
  # pyenv shims exist even when 3.10 is not the active version: run the candidate to be sure.
  if "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1; then PY="$c"; break; fi
done
[ -n "$PY" ] || { echo "python3.10 not found: install it (e.g. pyenv install 3.10)" >&2; exit 1; }
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install torch torchvision spikingjelly==0.0.0.0.14 numpy requests tqdm

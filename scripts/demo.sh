#!/usr/bin/env bash
# Set up (if needed) and run the demo: MNIST CNN -> SNN -> Loihi fixed point -> NetX -> Lava.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/loihi-conv demo "$@"

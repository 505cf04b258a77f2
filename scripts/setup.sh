#!/usr/bin/env bash
# Create .venv (Python 3.10) with the pinned environment. Idempotent: a stamp of the inputs
# makes a second run with everything in place return in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python310() {
  local c
  for c in python3.10 "$(command -v pyenv >/dev/null 2>&1 && pyenv root)"/versions/3.10.*/bin/python \
           "$HOME"/.pyenv/versions/3.10.*/bin/python /usr/bin/python3.10 /usr/local/bin/python3.10; do
    [ -n "$c" ] || continue
    if "$c" -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1; then
      command -v "$c" 2>/dev/null || echo "$c"; return 0
    fi
  done
  return 1
}

stamp_of() { cat requirements/lock.txt pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1; }

want=$(stamp_of)
if [ -x .venv/bin/python ] && [ "$(cat .venv/.loihi-conv-stamp 2>/dev/null)" = "$want" ]; then
  exit 0
fi

py=$(find_python310) || {
  echo "error: Python 3.10 not found (lava-nc 0.10.0 and lava-dl 0.6.0 need exactly 3.10)." >&2
  echo "  fix: install it, e.g. 'pyenv install 3.10.13' or 'apt-get install python3.10 python3.10-venv'," >&2
  echo "       then run this command again." >&2
  exit 1
}
echo "setup: creating .venv with $py"
[ -x .venv/bin/python ] || "$py" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${pip[@]}" install -r requirements/lock.txt
# lava-dl without its declared deps: they pull unittest2 -> the argparse backport (shadows stdlib
# argparse, breaks pytest) and pin pytest<8. Everything it really imports is in the lock file.
"${pip[@]}" install --no-deps lava-dl==0.6.0
"${pip[@]}" install --no-deps -e .
.venv/bin/python - <<'PY'
import argparse, sys
assert "site-packages" not in argparse.__file__, f"argparse backport shadows stdlib: {argparse.__file__}"
PY
echo "$want" > .venv/.loihi-conv-stamp
echo "setup: done"

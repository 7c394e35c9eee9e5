#!/usr/bin/env bash
# Create (or reuse) the project's venv and install Tidemark into it, editable.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PY" -m venv .venv
fi
# Old pips fail on some packages' metadata: upgrade first.
.venv/bin/python -m pip install -q -U pip
echo "==> installing tidemark (editable) with test extras"
.venv/bin/python -m pip install -q -e '.[test]'

#!/usr/bin/env bash
# Set up and run the whole test suite: venv, the rig's pinned binaries (built once and
# cached under ~/.cache/tidemark), then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
if .venv/bin/tidemark dev --help >/dev/null 2>&1; then
  echo "==> rig binaries (cached after the first build)"
  .venv/bin/tidemark dev install-bins
fi
echo "==> ruff"
.venv/bin/ruff check .
echo "==> pytest"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"

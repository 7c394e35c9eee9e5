#!/usr/bin/env bash
# Build/cache the test rig's pinned binaries outside the repo (~/.cache/tidemark/bin).
# A thin wrapper: all logic lives in `tidemark dev install-bins` (rig/tidemark_rig/install_bins.py).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if command -v tidemark >/dev/null 2>&1; then
  exec tidemark dev install-bins "$@"
fi
exec "${here}/.venv/bin/tidemark" dev install-bins "$@"

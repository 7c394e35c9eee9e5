#!/usr/bin/env bash
# Set up and run the local playground demo: a fleet on loopback, faults, verification.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/tidemark playground demo "$@"

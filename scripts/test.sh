#!/usr/bin/env bash
# Set up and run the whole test suite: venv, the rig's pinned binaries (built once and
# cached under ~/.cache/tidemark), then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
# The SQL tests drive real PostgreSQL clients (psql, pgbench) and the SQL bench a real
# PostgreSQL: Debian's packages, installed when missing (the machine image has them).
if ! command -v psql >/dev/null 2>&1 || [ ! -x /usr/lib/postgresql/15/bin/pgbench ]; then
  echo "==> installing PostgreSQL 15 client tools (Debian)"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-15 postgresql-client-15
  else
    echo "psql/pgbench missing: install Debian's postgresql-15 and postgresql-client-15" >&2
  fi
fi
if .venv/bin/tidemark dev --help >/dev/null 2>&1; then
  echo "==> rig binaries (cached after the first build)"
  .venv/bin/tidemark dev install-bins
  # optional for users, not for the suite: the monitoring rules' tests run promtool
  .venv/bin/tidemark dev install-bins --only promtool
fi
echo "==> ruff"
.venv/bin/ruff check .
echo "==> pytest"
# the slowest tests named in every run: where the warm budget goes
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=30 "$@"

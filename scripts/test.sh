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
pytest=(.venv/bin/python -m pytest -q -p no:cacheprovider)
if [ "$#" -gt 0 ]; then
  echo "==> pytest $*"
  exec "${pytest[@]}" --durations=30 "$@"
fi
# The whole suite: the kind tier runs beside the rest. Most of its ~18 min is waiting on a
# real cluster (a killed node's NotReady, the node-loss timeout, 300 s workloads), so the
# two together take about the longer one's time instead of the sum (docs/testing.md).
# Niced: on a cold machine its first step compiles the kind node's programs, which must
# not starve the timing of the tests beside it (the cluster's containers are not niced).
# Its output goes to a file, printed when it ends; the slowest tests are named in both.
kind_log=$(mktemp /tmp/tidemark-kind-tier.XXXXXX.log)
echo "==> pytest tests/kind, in the background (log: $kind_log)"
nice -n 10 "${pytest[@]}" --durations=15 tests/kind >"$kind_log" 2>&1 &
kind_pid=$!
trap 'kill "$kind_pid" 2>/dev/null || true' INT TERM
echo "==> pytest, everything but tests/kind"
rest=0
"${pytest[@]}" --durations=30 --ignore=tests/kind || rest=$?
kind=0
wait "$kind_pid" || kind=$?
echo "==> pytest tests/kind (exit $kind)"
cat "$kind_log"
rm -f "$kind_log"
echo "==> exit: the kind tier $kind, the rest $rest"
[ "$rest" -eq 0 ] && [ "$kind" -eq 0 ]

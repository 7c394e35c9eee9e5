"""What the components really export on /metrics, and the metric names a PromQL
expression uses (tests/unit/test_monitoring.py).

- A storage node: one `tidemark node run` process on 127.0.162.x with continuous backup
  to a file:// store, given a segment and one write batch, then scraped over HTTP.
- The operator: its metrics module served by `metrics.serve` on 127.0.162.x in a child
  process, fed a status shaped as a reconcile pass writes it, then scraped over HTTP.
- A database instance: its telemetry (sql/tidemark_sql/telemetry.py) with the writer's
  and the reader's instruments recorded once, rendered by the exporter in a child process
  (a real instance needs a whole fleet).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tidemark_compute.topology import load_node_credentials, write_node_key
from tidemark_protocol.frames import encode_batch_with_encoded_records
from tidemark_protocol.node_auth import Role
from tidemark_protocol.records import Record, RecordFlags

MEMBERS = ["n1", "n2", "n3", "n4", "n5", "n6"]


def exposition_names(text: str) -> set[str]:
    """Every sample name in Prometheus text (counters with _total, histograms' _bucket,
    _sum and _count)."""
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


# -- PromQL ------------------------------------------------------------------------------------
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
             "and", "or", "unless", "inf", "nan", "le"}
_CLAUSE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL (or Grafana label_values) expression: identifiers that are
    not functions, keywords, label matchers, grouping labels, durations or variables."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    e = re.sub(r"label_values\(([^,)]*)(,[^)]*)?\)", r"(\1)", e)
    e = re.sub(r"\$\{[^}]*\}|\$\w+", " ", e)  # Grafana variables
    e = re.sub(r"\{[^}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)  # ranges, subqueries
    e = _CLAUSE.sub(" ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", e):
        if m.group(2) is None and m.group(1).lower() not in _KEYWORDS:
            names.add(m.group(1))
    return names


# -- a storage node -------------------------------------------------------------------------------
def _loopback() -> tuple[str, int]:
    for _ in range(50):
        host = f"127.0.162.{random.randint(2, 250)}"
        with socket.socket() as s:
            try:
                s.bind((host, 0))
            except OSError:
                continue
            return host, s.getsockname()[1]
    raise AssertionError("no free address on 127.0.162.x")


def _get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except OSError:
        return 0, ""


async def _write_one_batch(url: str, key_dir: Path) -> None:
    body = {"layout": {"pg_count": 4, "pages_per_pg": 16, "page_size": 256},
            "membership": {"epoch": 1, "members": MEMBERS, "next_members": None},
            "peers": {}, "volume_epoch": 1}
    recs = [Record(1, 0, 0, 0, 0, RecordFlags.CPL, b"\0\0\0\0a"),
            Record(2, 0, 1, 1, 0, RecordFlags.CPL, b"\0\0\0\0b")]
    frame = encode_batch_with_encoded_records(1, 1, 2, 0, [(0, 1, [r.encode() for r in recs])])
    admin = load_node_credentials(key_dir).headers(Role.ADMIN)
    async with aiohttp.ClientSession(headers=admin) as session:
        async with session.put(f"{url}/v1/segments/0", json=body) as resp:
            assert resp.status == 200, await resp.text()
        async with session.ws_connect(url.replace("http", "ws") + "/v1/log") as ws:
            await ws.send_bytes(frame)
            ack = await asyncio.wait_for(ws.receive(), 20)
            assert '"scl": 2' in ack.data or '"scl":2' in ack.data, ack.data


def node_exposition(tmp: Path, timeout: float = 45.0) -> str:
    host, port = _loopback()
    url = f"http://{host}:{port}"
    log = (tmp / "node.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidemark_cli.main", "node", "run", "--name", "n1", "--zone", "z1",
         "--host", host, "--port", str(port), "--data", str(tmp / "data"),
         "--backup", f"file://{tmp / 'bucket'}", "--backup-interval", "0.5",
         "--auth-key-file", str(write_node_key(tmp))],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while _get(f"{url}/readyz")[0] != 200:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp / "node.log").read_text()[-3000:]
            time.sleep(0.2)
        asyncio.run(_write_one_batch(url, tmp))
        while True:  # the uploader ships the batch: its gauges move off zero
            status, text = _get(f"{url}/metrics")
            if re.search(r"^tidemark_backup_uploaded_objects\S* [1-9]", text, re.M) or \
                    time.monotonic() > deadline:
                return text
            time.sleep(0.3)
    finally:
        proc.kill()
        proc.wait(10)
        log.close()


# -- the operator and an instance (child processes: one OpenTelemetry provider each) --------------
_OPERATOR = """
import json, sys, urllib.request
from tidemark_operator import metrics
metrics.serve({port}, host={host!r})
status = json.loads(sys.argv[1])
metrics.record_reconcile("timer", "ok", 0.01)
metrics.record_status("ns", "demo", status, "2026-01-01T00:00:00Z")
with urllib.request.urlopen("http://{host}:{port}/metrics", timeout=10) as r:
    sys.stdout.write(r.read().decode())
"""

# A status as a pass writes it (status.compute_status + instances + finish_status).
STATUS = {
    "observedGeneration": 1, "zones": ["a", "b", "c"], "readyNodes": "6/6", "healthyPGs": "3/4",
    "writablePGs": 4, "segments": {"0": 6, "1": 6, "2": 5, "3": 6}, "vdl": 1234, "phase": "Degraded",
    "conditions": [
        {"type": "Ready", "status": "True", "reason": "QuorumAvailable"},
        {"type": "Progressing", "status": "True", "reason": "Repairing"},
        {"type": "Degraded", "status": "True", "reason": "SegmentsMissing"},
        {"type": "BackupHealthy", "status": "True", "reason": "UploadsCurrent"}],
    "readyInstances": "2/2", "currentPrimary": "demo-writer-0",
    "instances": [{"name": "demo-writer-0", "role": "writer", "serving": True},
                  {"name": "demo-replica-0", "role": "replica", "serving": True, "lagMs": 12.5}],
    "backup": {"target": "s3://b/p", "state": "Active", "lastChecked": "2026-01-02T00:00:00Z",
               "firstRecoverableTime": "2026-01-01T00:00:00.000000+00:00",
               "latestRestorableTime": "2026-01-01T12:00:00.000000+00:00",
               "lastSuccessfulUpload": "2026-01-01T12:00:01.000000+00:00", "lastError": None,
               "BackupRetentionPeriodStorageUsed": 10, "SnapshotStorageUsed": 0,
               "TotalBackupStorageBilled": 0, "VolumeBytesUsed": 4096, "retentionDays": 1},
}

_INSTANCE = """
import sys
from tidemark_compute import reader, writer
from tidemark_sql import telemetry
telemetry.setup("replica", lag_ms=lambda: 3.0)
writer.commits_total.add(1)
writer.commit_latency.record(1.5)
reader.lag_histogram.record(2.0)
sys.stdout.write(telemetry.render()[0].decode())
"""


def _child(code: str, *args: str) -> str:
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def operator_exposition(status: dict) -> str:
    host, port = _loopback()
    return _child(_OPERATOR.format(host=host, port=port), json.dumps(status))


def instance_exposition() -> str:
    return _child(_INSTANCE)

"""`tidemark chaos --cluster`: the pieces that need no cluster (the Job, its logs, the
command's refusals); the experiments themselves run in tests/kind."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from rich.console import Console

from tidemark_cli.chaos import chaos
from tidemark_cli.chaos_job import WorkloadJob, parse_logs
from tidemark_cli.chaos_plot import _windows
from tidemark_cli.cluster_chaos import ClusterRun

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_the_workload_job_is_pod_security_restricted_and_verifies() -> None:
    m = WorkloadJob("demo", "default", "tidemark:0.1.0", 90).manifest()
    pod = m["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["command"][:4] == ["tidemark", "workload", "--from-cluster", "demo"]
    assert {"--verify", "--json", "--progress"} <= set(c["command"])
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"] and c["securityContext"]["readOnlyRootFilesystem"]
    assert m["spec"]["backoffLimit"] == 0 and pod["restartPolicy"] == "Never"
    # the cluster's NetworkPolicy admits it to the storage nodes (and the example Job alike)
    assert m["spec"]["template"]["metadata"]["labels"]["tidemark.dev/node-client"] == "demo"
    example = [d for d in yaml.safe_load_all((ROOT / "examples" / "workload-job.yaml").read_text())
               if d["kind"] == "Job"][0]
    assert example["spec"]["template"]["metadata"]["labels"] == {"tidemark.dev/node-client": "demo"}


def test_logs_give_progress_lines_and_the_summary_whatever_else_is_printed() -> None:
    summary = {"acked": 10, "lost": 0, "verified": True}
    text = "\n".join([
        "some warning from a library",
        json.dumps({"progress": {"t": 1.0, "commits": 3, "window_commits": 3, "p99_ms": 4.0}}),
        "{not json",
        json.dumps({"progress": {"t": 2.0, "commits": 5, "window_commits": 2, "p99_ms": None}}),
        json.dumps(summary),
    ])
    report = parse_logs(text)
    assert [p["commits"] for p in report.progress] == [3, 5]
    assert report.summary == summary
    assert parse_logs("Traceback ...").summary is None
    failed = parse_logs('{"error": "recovered records of pgs [0] did not reach a write quorum"}\nError: ...')
    assert failed.summary is None and failed.error and "write quorum" in failed.error


def test_fault_windows_pair_each_fault_with_its_recovery() -> None:
    events = [(1.0, "info", ""), (5.0, "fault", "a"), (9.0, "recover", "a"), (12.0, "fault", "b"), (20.0, "info", "")]
    assert _windows(events, "fault", "recover") == [(5.0, 9.0), (12.0, 20.0)]


@pytest.mark.parametrize("args, message", [
    (["restart-operator"], "add --cluster NAME"),
    (["--cluster", "demo", "zone-plus-one"], "playground experiment"),
])
def test_experiments_are_refused_where_they_do_not_run(args: list[str], message: str) -> None:
    done = CliRunner().invoke(chaos, args)
    assert done.exit_code == 2 and message in done.output, done.output


def test_the_commit_rate_during_a_fault_counts_only_the_fault_window() -> None:
    from types import SimpleNamespace

    from tidemark_cli.cluster_chaos import fault_commit_rate

    run = SimpleNamespace(t0=1000.0, events=[(0.0, "info", ""), (10.0, "fault", "kill"), (20.0, "recover", "start")])
    progress = [{"t": 1000.0 + i, "window_commits": 0 if 10 <= i <= 20 else 500} for i in range(30)]
    assert fault_commit_rate(run, progress) == 0  # a stall (what kind showed before the GC hold)
    progress = [{"t": 1000.0 + i, "window_commits": 300} for i in range(30)]
    assert fault_commit_rate(run, progress) == 300
    assert fault_commit_rate(SimpleNamespace(t0=0.0, events=[]), progress) is None


def test_a_fault_may_take_one_operator_replica_but_never_the_last() -> None:
    run = ClusterRun("demo", "default", Console(file=io.StringIO()))
    assert run.spares_an_operator({"w1"})  # no operator in the cluster: nothing to spare
    run.operators = {"w1", "w4"}  # the chart's two peers
    assert run.spares_an_operator({"w1", "w2", "w3"}) and run.spares_an_operator({"w4"})
    assert not run.spares_an_operator({"w1", "w4"})
    run.operators = {"w1"}
    assert not run.spares_an_operator({"w1"})

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tidemark_rig.procs import tail


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(autouse=True)
def _operator_log_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the operator's log tail, then those of the namespace's newest database instances,
    when a test using an operator `env` fails (CI shows the end of the output)."""
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed and "env" in request.fixturenames:
        env = request.getfixturevalue("env")
        print(f"--- operator log tail ---\n{tail(env['log'], 60)}")
        pod_logs = sorted((Path(env["rig"].dir) / "logs" / "pods").glob(f"{env['ns']}_*.log"),
                          key=lambda f: f.stat().st_mtime)
        for log in [f for f in pod_logs if "-writer-" in f.name or "-replica-" in f.name][-4:]:
            print(f"--- {log.name} tail ---\n{tail(log, 12)}")

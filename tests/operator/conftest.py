from __future__ import annotations

from collections.abc import Iterator

import pytest

from tidemark_rig.procs import tail


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(autouse=True)
def _operator_log_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the operator's log tail when a test using an operator `env` fails."""
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed and "env" in request.fixturenames:
        log = request.getfixturevalue("env")["log"]
        print(f"--- operator log tail ---\n{tail(log, 60)}")

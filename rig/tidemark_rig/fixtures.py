"""Pytest fixtures for the rig (load with ``pytest_plugins = ["tidemark_rig.fixtures"]``).

- ``rig_cluster`` (session): a running :class:`ControlPlane` (etcd, kube-apiserver,
  controller-manager, scheduler, kwok nodes in zones a/b/c, pod runner), shared by the
  whole session because starting one costs seconds.
- ``rig_kubeconfig`` (session): the admin kubeconfig path; ``rig_api`` (session): an ApiClient.
- ``rig_namespace``: a fresh namespace per test, deleted afterwards.
- ``rig_minio_server`` (session) and ``minio`` (per test, a fresh bucket): a
  :class:`MinioInfo` with endpoint, access key, secret key and bucket.

Missing binaries skip the test with the reason, except under ``CI=true`` where they fail it.
A rig that does not come up is an error everywhere. When a test that used the rig fails,
the tail of every component log is added to its report.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .control_plane import CONTROL_PLANE_BINS, ClusterConfig, ControlPlane
from .minio import MinioInfo, MinioServer
from .procs import tail
from .versions import bin_path, missing_binaries

_LOG_DIRS: list[Path] = []
RIG_FIXTURES = {"rig_cluster", "rig_kubeconfig", "rig_api", "rig_namespace", "rig_minio_server",
                "minio"}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def kubectl_path() -> str:
    """kubectl on PATH; a test needing it fails under CI=true and skips elsewhere."""
    path = shutil.which("kubectl")
    if path is None:
        if in_ci():
            pytest.fail("kubectl not on PATH")
        pytest.skip("kubectl not on PATH")
    return path


def helm(tmp_path: Path, *args: str) -> str:
    """The rig's pinned helm, in a throwaway home under TMP_PATH; its output (a failure
    fails the test, with helm's output)."""
    require_binaries(["helm"])
    env = {"HELM_CACHE_HOME": str(tmp_path / "cache"), "HELM_CONFIG_HOME": str(tmp_path / "cfg"),
           "HELM_DATA_HOME": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    res = subprocess.run([str(bin_path("helm")), *args], capture_output=True, text=True,
                         timeout=60, env=env)
    assert res.returncode == 0, f"helm {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def require_binaries(names: list[str]) -> None:
    missing = [n for n in missing_binaries() if n in names]
    if not missing:
        return
    msg = (f"rig binaries missing: {', '.join(missing)} (looked for "
           f"{', '.join(str(bin_path(n)) for n in missing)}); run `tidemark dev install-bins`")
    if in_ci():
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def rig_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    require_binaries(CONTROL_PLANE_BINS)
    rig_dir = tmp_path_factory.mktemp("rig-cluster")
    cp = ControlPlane(rig_dir, ClusterConfig())
    _LOG_DIRS.append(cp.dir / "logs")
    cp.up()
    try:
        yield cp
    finally:
        cp.down()


@pytest.fixture(scope="session")
def rig_kubeconfig(rig_cluster: ControlPlane) -> str:
    return str(rig_cluster.kubeconfig)


@pytest.fixture(scope="session")
def rig_api(rig_cluster: ControlPlane) -> Any:
    return rig_cluster.api_client()


@pytest.fixture
def rig_namespace(rig_cluster: ControlPlane) -> Iterator[str]:
    name = "t-" + uuid.uuid4().hex[:8]
    core = rig_cluster.core()
    core.create_namespace({"metadata": {"name": name}}, _request_timeout=10)
    try:
        yield name
    finally:
        core.delete_namespace(name, _request_timeout=10)


@pytest.fixture(scope="session")
def rig_minio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioServer]:
    require_binaries(["minio"])
    server = MinioServer(tmp_path_factory.mktemp("rig-minio"))
    _LOG_DIRS.append(server.dir / "logs")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def minio(rig_minio_server: MinioServer) -> MinioInfo:
    return rig_minio_server.make_bucket("test-" + uuid.uuid4().hex[:12])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed or not RIG_FIXTURES & set(getattr(item, "fixturenames", ())):
        return
    for log_dir in _LOG_DIRS:
        for log in sorted(log_dir.glob("*.log")) + sorted(log_dir.glob("pods/*.log")):
            rep.sections.append((f"rig log {log.relative_to(log_dir.parent)} (tail)", tail(log, 25)))

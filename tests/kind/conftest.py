"""One kind cluster for the kind tests, made by the documented command `tidemark dev kind up`.

Under CI=true a missing engine, image build or cluster fails the run; elsewhere the tests
skip only when this machine cannot run an engine at all (not root and none running).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kindenv import ROOT, Kind

from tidemark_rig.kind import engine
from tidemark_rig.kind.node_bins import all_paths

NAME = "tidemark"


def _tidemark(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tidemark_cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


# Module scope: the ten nodes are deleted as soon as the kind tests are done, so they do
# not load the machine under the rest of the suite.
@pytest.fixture(scope="module")
def kind_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kind]:
    if os.environ.get("CI") != "true" and os.geteuid() != 0 and not engine.engine_answers():
        pytest.skip("no Docker engine and not root to start one (under CI=true this fails)")
    # Cold: the node programs build from the Go module proxy (~20 min); warm: ~2 min.
    done = _tidemark("dev", "kind", "up", "--name", NAME, "--json", timeout=3600)
    if done.returncode != 0:
        pytest.fail(f"tidemark dev kind up failed: {done.stdout.strip()} {done.stderr.strip()[-3000:]}")
    up = json.loads(done.stdout)
    sys.stderr.write(f"\nkind up: {up['seconds']}s {up['steps']}\n")
    bin_dir = tmp_path_factory.mktemp("kubectl-bin")
    (bin_dir / "kubectl").symlink_to(all_paths()["kubectl"])
    kind = Kind(NAME, Path(up["kubeconfig"]), up, bin_dir)
    try:
        yield kind
    finally:
        if os.environ.get("TIDEMARK_KIND_KEEP") != "1":
            _tidemark("dev", "kind", "down", "--name", NAME, timeout=300)



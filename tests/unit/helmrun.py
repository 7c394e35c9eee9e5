"""`helm` (a rig binary scripts/test.sh builds) in a throwaway home, for the chart's tests:
under CI its absence is a failure, elsewhere a skip."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tidemark_rig.versions import bin_path


def helm(tmp_path: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    if not os.access(bin_path("helm"), os.X_OK):
        missing = f"no {bin_path('helm')}; run `tidemark dev install-bins --only helm`"
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    env = {"HELM_CACHE_HOME": str(tmp_path / "cache"), "HELM_CONFIG_HOME": str(tmp_path / "cfg"),
           "HELM_DATA_HOME": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    res = subprocess.run([str(bin_path("helm")), *args], capture_output=True, text=True, timeout=60, env=env)
    if ok:
        assert res.returncode == 0, f"helm {' '.join(args)}:\n{res.stderr}"
    return res

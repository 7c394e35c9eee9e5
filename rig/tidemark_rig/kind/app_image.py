"""The Tidemark image, built from the repository's Dockerfile with wheels made on the host.

Containers here cannot reach a package index (the egress guard), so `pip wheel` runs on
the host into `dist/wheels/` and the Dockerfile installs from there with `--no-index`.
The base is the offline Debian `tools` base (Python 3.11 from Debian); the wheels must
be for that Python, so the host's interpreter must be 3.11 too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from ..procs import RigError
from . import dockercmd

PYTHON = (3, 11)  # Debian bookworm's python3, the offline base's


def package_version(repo: Path) -> str:
    return str(tomllib.loads((repo / "pyproject.toml").read_text())["project"]["version"])


def build_wheels(repo: Path, log: Path) -> Path:
    if sys.version_info[:2] != PYTHON:
        raise RigError(f"the offline image's Python is {PYTHON[0]}.{PYTHON[1]}; run this with a "
                       f"{PYTHON[0]}.{PYTHON[1]} interpreter (this one is {sys.version.split()[0]})")
    wheels = repo / "dist" / "wheels"
    marker = wheels / ".made-by-tidemark"  # only a directory we made is ever emptied
    if wheels.exists():
        if not marker.exists():
            raise RigError(f"{wheels} exists and was not made by tidemark dev kind: move it away")
        shutil.rmtree(wheels)
    deps, app = wheels / "deps", wheels / "app"
    app.mkdir(parents=True)
    marker.touch()
    with log.open("a") as fh:
        cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(deps), str(repo)]
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        # Reproducible wheels: unchanged code gives the same bytes, so the same image ID,
        # and `kind load` skips nodes that already hold it (a warm `kind up` loads nothing).
        env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800"}
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=1800, env=env)
    if done.returncode != 0:
        raise RigError(f"pip wheel failed; log: {log}")
    # Tidemark's own wheel apart: the dependency layer stays cached while the code changes.
    for own in deps.glob("tidemark-*.whl"):
        own.rename(app / own.name)
    return wheels


def build_image(repo: Path, base: str, tag: str, log: Path) -> str:
    build_wheels(repo, log)
    dockercmd.build(repo, tag, log, {"BASE": base})
    return tag

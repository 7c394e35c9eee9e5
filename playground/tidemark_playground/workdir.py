"""Work directories of one-shot commands (`tidemark chaos`, `tidemark playground demo`):
never delete what the command did not create. A directory is reused only if an earlier
run of such a command made it (it holds the marker) and no fleet in it is still running."""

from __future__ import annotations

import shutil
from pathlib import Path

from .fleet import FLEET_FILE, Fleet

MARKER = ".tidemark-workdir"


class WorkDirError(Exception):
    """The directory holds something this command did not create, or a live fleet."""


def fresh_workdir(directory: Path) -> Path:
    """An empty DIRECTORY, made (and marked) by us: created if absent, emptied if an
    earlier run of ours made it, refused otherwise."""
    if directory.exists() and not directory.is_dir():
        raise WorkDirError(f"{directory} is a file, not a directory: pick another --dir")
    if directory.exists() and any(directory.iterdir()):
        if not (directory / MARKER).exists():
            raise WorkDirError(f"{directory} is not empty and was not made by a Tidemark run: "
                               "remove it yourself or pick another --dir")
        if (directory / FLEET_FILE).exists() and _live(Fleet.load(directory)):
            raise WorkDirError(f"a fleet is still running in {directory}: "
                               f"`tidemark playground down --dir {directory}` first")
        shutil.rmtree(directory)  # ours: its marker says an earlier run of ours made it
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("made by a tidemark chaos/demo run; safe for the next run to empty\n")
    return directory


def _live(fleet: Fleet) -> list[str]:
    names = [n for n in [*fleet.nodes, *fleet.instances] if fleet.state(n) != "dead"]
    return names + (["supervisor"] if fleet.supervisor_state() != "dead" else [])

"""Work directories of one-shot commands (`tidemark chaos`, `tidemark playground demo`):
never delete what the command did not create. A directory is reused only if an earlier
run of such a command made it (it holds the marker), no fleet in it is still running and
it holds nothing such a run does not write; then only those entries are deleted."""

from __future__ import annotations

from pathlib import Path

from tidemark_protocol.errors import UserError

from .fleet import FLEET_ENTRIES, FLEET_FILE, Fleet, purge

MARKER = ".tidemark-workdir"
WORKLOAD_LOG = "workload.log"  # `tidemark chaos`'s record of intents and acks
RUN_ENTRIES = frozenset({*FLEET_ENTRIES, MARKER, WORKLOAD_LOG})


class WorkDirError(UserError):
    """The directory holds something this command did not create, or a live fleet."""


def fresh_workdir(directory: Path) -> Path:
    """An empty DIRECTORY, made (and marked) by us: created if absent, emptied if an
    earlier run of ours made it and it holds only what such a run writes, refused otherwise."""
    if directory.exists() and not directory.is_dir():
        raise WorkDirError(f"{directory} is a file, not a directory: pick another --dir")
    if directory.exists() and any(directory.iterdir()):
        _check_ours(directory)
        for name in (MARKER, WORKLOAD_LOG):
            (directory / name).unlink(missing_ok=True)
        purge(directory)  # the fleet's entries, then the directory itself: nothing else is left
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("made by a tidemark chaos/demo run; safe for the next run to empty\n")
    return directory


def _check_ours(directory: Path) -> None:
    """Refuses (WorkDirError) unless an earlier stopped run of ours made DIRECTORY and
    wrote everything in it."""
    if not (directory / MARKER).exists():
        raise WorkDirError(f"{directory} is not empty and was not made by a Tidemark run: "
                           "remove it yourself or pick another --dir")
    if (directory / FLEET_FILE).exists() and _live(Fleet.load(directory)):
        raise WorkDirError(f"a fleet is still running in {directory}: "
                           f"`tidemark playground down --dir {directory}` first")
    foreign = sorted(p.name for p in directory.iterdir() if p.name not in RUN_ENTRIES)
    if foreign:
        raise WorkDirError(f"{directory} holds what no Tidemark run wrote ({', '.join(foreign[:5])}): "
                           "move it away or pick another --dir")


def _live(fleet: Fleet) -> list[str]:
    names = [n for n in [*fleet.nodes, *fleet.instances] if fleet.state(n) != "dead"]
    return names + (["supervisor"] if fleet.supervisor_state() != "dead" else [])

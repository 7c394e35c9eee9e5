"""The playground's writer lease: DIR/writer.json names the volume's current writer
instance (volume epoch, replica feed URL).

A writer whose epoch is no longer the one named there has been superseded: a newer
writer sealed the volume. Its next commit would be fenced by the nodes anyway, but its
reads would be stale, so it stops answering altogether. The file is re-read at most
every CHECK_EVERY seconds and, since `holds()` runs before every answer, also right
after a pause (SIGSTOP): a resumed old writer re-reads it before it says anything.
Replicas find the writer's feed here.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

WRITER_FILE = "writer.json"
CHECK_EVERY = 0.25


def read_writer(directory: Path) -> dict | None:
    try:
        return json.loads((directory / WRITER_FILE).read_text())
    except (OSError, ValueError):
        return None


def feed_url(directory: Path) -> str | None:
    data = read_writer(directory)
    return None if data is None else data.get("feed")


class WriterLease:
    def __init__(self, directory: Path, epoch: int) -> None:
        self.path = directory / WRITER_FILE
        self.directory = directory
        self.epoch = epoch
        self._checked = 0.0
        self._held = True

    def claim(self, feed: str) -> None:
        """Name ourselves the writer (our epoch is the newest: we just sealed)."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"volume_epoch": self.epoch, "feed": feed, "pid": os.getpid()}))
        os.replace(tmp, self.path)
        self._checked = time.monotonic()

    def holds(self) -> bool:
        now = time.monotonic()
        if self._held and now - self._checked >= CHECK_EVERY:
            data = read_writer(self.directory)
            self._held = data is None or int(data.get("volume_epoch", 0)) <= self.epoch
            self._checked = now
        return self._held

"""The BackupHealthy condition of a backed-up AuroraCluster, from status.backup (pure).

True when the backup daemon's last poll reached the store without an error, the nodes
have uploaded something, and the newest upload is at most STALE_AFTER seconds old (the
uploaders ship log chunks and VDL marks continuously, so an older one means they stopped).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from typing import Any

from .status import condition

CONDITION = "BackupHealthy"
STALE_AFTER = float(os.environ.get("TIDEMARK_OPERATOR_BACKUP_STALE_AFTER", "900"))


def parse_time(text: Any) -> float | None:
    """Epoch seconds of an ISO time in status.backup (None: absent or unreadable)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def backup_health(block: Mapping[str, Any], now: float,
                  stale_after: float = STALE_AFTER) -> tuple[bool, str, str]:
    """(healthy?, reason, message) of BackupHealthy for status.backup BLOCK."""
    state = block.get("state")
    if state == "WaitingForRestore":
        return False, "WaitingForRestore", "the cluster's own backup starts once the restore is loaded"
    if block.get("lastChecked") is None:
        return False, "NotPolled", "the backup store has not been polled yet"
    if block.get("lastError"):
        return False, "BackupError", str(block["lastError"])[:500]
    last = parse_time(block.get("lastSuccessfulUpload"))
    if last is None:
        return False, "NoUpload", "no object uploaded to the backup store yet"
    age = now - last
    if age > stale_after:
        return False, "UploadStale", (f"newest upload at {block['lastSuccessfulUpload']} is older "
                                      f"than {stale_after:.0f}s")
    # The message names the upload's time, not its age: a message that changed every pass
    # would patch the status every pass.
    return True, "UploadsCurrent", f"newest upload at {block['lastSuccessfulUpload']}, no errors"


def apply(status: dict[str, Any], generation: int, old_conds: Sequence[Mapping[str, Any]],
          now_iso: str, now: float) -> None:
    """Add (or replace) the BackupHealthy condition of STATUS from its status.backup."""
    ok, reason, msg = backup_health(status["backup"], now)
    conds = [c for c in status.get("conditions", []) if c["type"] != CONDITION]
    conds.append(condition(CONDITION, ok, reason, msg, generation, old_conds, now_iso))
    status["conditions"] = conds

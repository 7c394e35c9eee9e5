"""The backup uploader's settings, its status (in /v1/status and on NodeState), its
per-PG progress, and the two rules it decides by: which member uploads a PG, and up to
which LSN a segment may certify the PG's log as complete."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tidemark_backup import images
from tidemark_backup.sealed import NO_KEYS, Keyring
from tidemark_protocol.quorum import Membership, has_read_quorum


@dataclass
class BackupSettings:
    url: str
    interval: float = 2.0
    snapshot_interval: float = 60.0  # seconds between automated snapshots of a PG
    snapshot_log_bytes: int = 64 << 20  # or after this much log since the last one
    retention_days: float = 1.0
    retention_interval: float = 30.0
    extent_bytes: int = images.EXTENT_BYTES  # span of an incremental image's extents
    # --backup-key-file: objects sealed with the first key; retention opens old ones with any
    keyring: Keyring = NO_KEYS


@dataclass
class PgProgress:
    covered: int = -1  # bucket coverage end known to us (-1: unknown)
    last_snap_time: float = 0.0
    log_bytes_since_snap: int = 0
    empty_run: tuple[int, int, int] | None = None  # (start, end, epoch) of our last chunk if empty
    designated: bool = False
    refreshed: float = 0.0
    manifest_written: bool = False
    # The last image we wrote, by extent: (ref, content digest); the next one shares
    # what did not change. Empty (after a restart or a takeover): a full image.
    image: dict[int, tuple[images.Ref, bytes]] = field(default_factory=dict)


@dataclass
class UploaderStatus:
    fenced: bool = False
    last_successful_upload: float | None = None
    last_error: str | None = None
    last_error_time: float | None = None
    uploaded_objects: int = 0
    uploaded_bytes: int = 0
    pending_marks: int = 0
    vdl_seen: int = 0
    pgs: dict = field(default_factory=dict)
    conditional_puts: bool = True  # False: the S3 server lacks If-None-Match; puts may overwrite
    key_id: str | None = None  # the key new objects are sealed with (None: unencrypted)

    def to_json(self) -> dict:
        return {
            "fenced": self.fenced,
            "lastSuccessfulUpload": self.last_successful_upload,
            "lastError": self.last_error,
            "lastErrorTime": self.last_error_time,
            "uploadedObjects": self.uploaded_objects,
            "uploadedBytes": self.uploaded_bytes,
            "pendingMarks": self.pending_marks,
            "vdlSeen": self.vdl_seen,
            "pgs": self.pgs,
            "conditionalPuts": self.conditional_puts,
            "encryptionKeyId": self.key_id,
        }


def designation_order(pg: int, members: list[str]) -> list[str]:
    """Members in the order they take the uploader role for `pg` (spread over nodes)."""
    ordered = sorted(members)
    k = pg % len(ordered) if ordered else 0
    return ordered[k:] + ordered[:k]


def certified_end(me: str, membership: Membership, scl: int, max_lsn: int, vdl: int,
                  peers: Mapping[str, Mapping]) -> int:
    """Highest LSN L such that this segment (`me`: SCL `scl`, highest record held
    `max_lsn`) holds every record of its PG <= L, and L <= `vdl` (durable, never
    truncated). `peers`: the PG's segment status on the other members that answered
    (`max_lsn` each).

    If SCL passed the VDL, that is the VDL. Else the VDL when a read quorum holds
    nothing beyond our SCL: the PG's last durable record is in a write quorum, which
    meets any read quorum. During a membership change that read quorum must be three
    members of the OLD set (quorum.has_read_quorum): a commit acknowledged just before
    the change lives only in a write quorum of the old set, which a quorum counting the
    new target (not hydrated yet) can miss. Else our SCL."""
    if scl >= vdl:
        return vdl
    quiet = [name for name, p in peers.items() if p.get("max_lsn", 1 << 62) <= scl]
    if max_lsn <= scl and has_read_quorum(membership, [me, *quiet]):
        return vdl
    return scl

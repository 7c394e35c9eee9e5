"""Manual snapshots: written into the bucket from the continuous backup, kept until
deleted. Shared by `tidemark snapshot` and the operator's AuroraSnapshot."""

from __future__ import annotations

import json
import time

from tidemark_backup import chunks, layout
from tidemark_backup.objstore import ObjStore

from .inventory import RestoreError, iso, load_inventory, rebuild_volume


def create_manual_snapshot(store: ObjStore, name: str | None = None, t_us: int | None = None) -> dict:
    """Write manual snapshot NAME of the volume at time T_US (default: the latest
    restorable point); returns its manifest. Shared by `tidemark snapshot create` and
    the operator's AuroraSnapshot. Raises RestoreError when T is not restorable."""
    inv = load_inventory(store)
    if inv.layout is None:
        raise RestoreError("no PG manifest in the backup")
    _first, latest = inv.window()
    t_us = t_us if t_us is not None else latest
    lsn = inv.lsn_for(t_us) if t_us is not None else None
    if lsn is None:
        raise RestoreError("the backup has no restorable point yet")
    name = name or time.strftime("snap-%Y%m%dT%H%M%SZ", time.gmtime())
    pages = rebuild_volume(store, inv, lsn)
    lay = inv.layout
    total = 0
    for pg in range(lay.pg_count):
        mine = {p: img for p, img in pages.items() if lay.pg_of(p) == pg}
        hdr = {"pg": pg, "start": lsn, "end": lsn, "lsn": lsn, "page_size": lay.page_size,
               "epoch": 0, "node": "manual", "gen": 0, "created_us": int(time.time() * 1e6),
               "layout": lay.to_json()}
        data = chunks.encode_snap(hdr, mine)
        store.put(layout.manual_snap_key(name, pg), data)
        total += len(data)
    info = {"name": name, "created": time.time(), "lsn": lsn, "time": iso(t_us),
            "layout": lay.to_json(), "pages": len(pages), "volume_bytes": len(pages) * lay.page_size,
            "bytes": total}
    store.put(layout.manual_manifest_key(name), json.dumps(info).encode())
    return info


def manual_snapshot_exists(store: ObjStore, name: str) -> bool:
    """Whether any object of manual snapshot NAME is in STORE (even a half-written one)."""
    return any(o.name == name for o in store.list(f"manual/{name}/"))


def delete_manual_snapshot(store: ObjStore, name: str) -> bool:
    """Delete manual snapshot NAME; False if there is none."""
    objs = [o for o in store.list(f"manual/{name}/") if o.name == name]
    for o in sorted(objs, key=lambda o: not o.key.endswith("manifest.json")):
        store.delete(o.key)  # manifest first: a half-deleted snapshot is not listed
    return bool(objs)


"""Background scrubber: verify the CRC of every stored record and page version, and
repair bad copies.

Every `scrub_interval` seconds each segment is scanned in small chunks (in the reader
executor, pausing between chunks and longer while the committer has queued work, so
the foreground keeps priority).

- A bad record copy is replaced by a peer's (`records?after=lsn-1&upto=lsn`, checked).
- A bad page version is rebuilt from the local log (the previous version plus the
  page's records up to it) when the log still covers that range; else a peer's page at
  a read point where the page equals that version is fetched.

Each corruption is counted once when found (`corruptions_detected`) and once when
fixed (`corruptions_repaired`), per segment and node-wide, in /v1/status and as the
OpenTelemetry counters `tidemark_corruptions_detected` / `_repaired`. Reads never serve
a bad copy (they CRC-check and answer 500 `corrupt_record`); a read that meets one asks
the scrubber for an early pass.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import structlog

from tidemark_protocol import keys
from tidemark_protocol.errors import CorruptRecord, ProtocolError
from tidemark_protocol.hydration import HydrationState
from tidemark_protocol.keys import decode_version, encode_version
from tidemark_protocol.pages import apply_redo, empty_page
from tidemark_protocol.records import split_records

from .reads import latest_version, page_records, parse_stored, read_record
from .segments import Segment
from .state import NodeState
from .store import Store
from .tls import peer_session

log = structlog.get_logger("tidemark.node.scrub")

CHUNK = 256  # keys per scan step
_TIMEOUT = aiohttp.ClientTimeout(total=10, connect=2)


# -- blocking scans (reader executor) ----------------------------------------------------
def scan_records(store: Store, pg: int, after: int, limit: int) -> tuple[list[int], int, int]:
    """Bad LSNs among up to `limit` records above `after`; (bad, scanned, last lsn)."""
    bad: list[int] = []
    n = 0
    last = after
    prefix = keys.pg_prefix(b"L", pg)
    for key, raw in store.scan(keys.log_key(pg, after + 1), keys.prefix_end(prefix), limit):
        lsn = keys.log_lsn(key)
        try:
            parse_stored(raw, pg, lsn)
        except CorruptRecord:
            bad.append(lsn)
        n += 1
        last = lsn
    return bad, n, last


def scan_versions(store: Store, pg: int, start: bytes, limit: int) -> tuple[list[tuple[int, int]], int, bytes | None]:
    """Bad (page, lsn) among up to `limit` versions from key `start`; (bad, scanned, next)."""
    bad: list[tuple[int, int]] = []
    n = 0
    last = None
    prefix = keys.pg_prefix(b"V", pg)
    for key, value in store.scan(start, keys.prefix_end(prefix), limit):
        page, lsn = keys.page_lsn(key)
        try:
            decode_version(value, pg, page, lsn)
        except CorruptRecord:
            bad.append((page, lsn))
        n += 1
        last = key
    return bad, n, (last + b"\0") if last is not None and n >= limit else None


def rebuild_version(store: Store, pg: int, page: int, lsn: int, page_size: int, log_gc_lsn: int) -> bytes | None:
    """The page as of version `lsn` from the previous version and the local log, if the
    log still holds every record of the page in between; else None."""
    try:
        base = latest_version(store, pg, page, lsn - 1)
    except CorruptRecord:
        return None
    blsn, image = base if base is not None else (0, empty_page(page_size))
    if blsn < log_gc_lsn:
        return None  # records of the page in (blsn, log_gc_lsn] may be gone
    try:
        for rl in page_records(store, pg, page, blsn, lsn):
            record = read_record(store, pg, rl)  # CRC-checked
            if record is None:
                return None
            image = apply_redo(image, record, page_size)
    except ProtocolError:
        return None  # a bad record on the way: a peer's page then
    return image


def next_page_record(store: Store, pg: int, page: int, lsn: int) -> int | None:
    for key in store.scan_keys(keys.index_key(pg, page, lsn + 1), keys.prefix_end(keys.page_prefix(b"X", pg, page)), 1):
        return keys.page_lsn(key)[1]
    return None


# -- repairs -------------------------------------------------------------------------------
def _peer_urls(state: NodeState, seg: Segment) -> list[tuple[str, str]]:
    out = []
    for name in seg.membership.all_members:
        if name == state.name:
            continue
        url = state.peer_url(seg, name)
        if url:
            out.append((name, url))
    return out


async def repair_record(state: NodeState, session: aiohttp.ClientSession, seg: Segment, lsn: int) -> bool:
    for name, url in _peer_urls(state, seg):
        try:
            params = {"after": str(lsn - 1), "upto": str(lsn), "limit": "1"}
            async with session.get(f"{url}/v1/segments/{seg.pg}/records", params=params, timeout=_TIMEOUT) as resp:
                if resp.status != 200:
                    continue
                body = await resp.read()
            recs = [r for r in split_records(body) if r.lsn == lsn and r.pg == seg.pg]
        except (aiohttp.ClientError, TimeoutError, ProtocolError) as exc:
            log.info("scrub_peer_failed", pg=seg.pg, lsn=lsn, peer=name, error=repr(exc))
            continue
        if not recs or seg.deleted:
            continue
        rec = recs[0]
        await state.committer.submit(
            [seg], puts=[(keys.log_key(seg.pg, lsn), rec.raw), (keys.index_key(seg.pg, rec.page, lsn), b"")]
        )
        return True
    return False


async def repair_version(state: NodeState, session: aiohttp.ClientSession, seg: Segment, page: int, lsn: int) -> str | None:
    loop = asyncio.get_running_loop()
    size = seg.layout.page_size
    image = await loop.run_in_executor(
        state.reader, rebuild_version, state.store, seg.pg, page, lsn, size, seg.log_gc_lsn
    )
    how = "local_log"
    if image is None:
        how = "peer"
        nxt = await loop.run_in_executor(state.reader, next_page_record, state.store, seg.pg, page, lsn)
        hi = (nxt - 1) if nxt is not None else seg.durable_scl
        for name, url in _peer_urls(state, seg):
            for at in dict.fromkeys((lsn, hi)):
                try:
                    params = {"at": str(at), "tail": str(lsn)}
                    async with session.get(f"{url}/v1/segments/{seg.pg}/pages/{page}", params=params,
                                           timeout=_TIMEOUT) as resp:
                        body = await resp.read()
                        ok = resp.status == 200
                except (aiohttp.ClientError, TimeoutError) as exc:
                    log.info("scrub_peer_failed", pg=seg.pg, page=page, peer=name, error=repr(exc))
                    break
                if ok and len(body) == size:
                    image = body
                    break
            if image is not None:
                break
    if image is None or seg.deleted:
        return None
    await state.committer.submit([seg], puts=[(keys.version_key(seg.pg, page, lsn), encode_version(image))])
    return how


# -- the pass ------------------------------------------------------------------------------
async def _pause(state: NodeState) -> None:
    await asyncio.sleep(0.05 if state.committer.queued else 0.001)


async def scrub_segment(state: NodeState, session: aiohttp.ClientSession, seg: Segment) -> tuple[int, int]:
    """One pass over a segment; returns (found, repaired) in this pass."""
    sc = state.scrubber
    loop = asyncio.get_running_loop()
    found = fixed = 0
    bad_records: list[int] = []
    after = 0
    while not seg.deleted:
        bad, n, after = await loop.run_in_executor(state.reader, scan_records, state.store, seg.pg, after, CHUNK)
        bad_records += bad
        if n < CHUNK:
            break
        await _pause(state)
    for lsn in bad_records:
        found += 1
        sc.note(seg, "record", 0, lsn)
        if await repair_record(state, session, seg, lsn):
            sc.fixed(seg, "record", 0, lsn, "peer")
            fixed += 1
            if seg.corrupt_lsn == lsn:
                seg.corrupt_lsn = None
    # Versions after records: a local rebuild needs good records.
    start: bytes | None = keys.pg_prefix(b"V", seg.pg)
    bad_versions: list[tuple[int, int]] = []
    while start is not None and not seg.deleted:
        bad, _n, start = await loop.run_in_executor(state.reader, scan_versions, state.store, seg.pg, start, CHUNK)
        bad_versions += bad
        await _pause(state)
    for page, lsn in bad_versions:
        found += 1
        sc.note(seg, "version", page, lsn)
        how = await repair_version(state, session, seg, page, lsn)
        if how is not None:
            sc.fixed(seg, "version", page, lsn, how)
            fixed += 1
    # Materialization stops at the first record it could not use (which may have been a
    # bad version it met): once nothing is known bad, let it try again.
    if seg.corrupt_lsn is not None and not any(k[0] == seg.pg for k in sc.known):
        raw = state.store.get(keys.log_key(seg.pg, seg.corrupt_lsn))
        try:
            if raw is not None:
                parse_stored(raw, seg.pg, seg.corrupt_lsn)
            seg.corrupt_lsn = None
        except CorruptRecord:
            pass
    return found, fixed


async def scrub_pass(state: NodeState, session: aiohttp.ClientSession) -> tuple[int, int]:
    sc = state.scrubber
    found = fixed = 0
    for seg in list(state.segments.values()):
        if seg.deleted or seg.hydrating():
            continue
        if seg.hydration_state() == HydrationState.FAILED:
            continue  # incomplete data, to be hydrated again: nothing to trust a rebuild on
        try:
            f, r = await scrub_segment(state, session, seg)
            found += f
            fixed += r
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("scrub_error", pg=seg.pg)
    sc.passes += 1
    sc.last_pass_at = time.time()
    return found, fixed


async def scrub_loop(state: NodeState) -> None:
    sc = state.scrubber
    interval = state.settings.scrub_interval
    if interval <= 0:
        return
    async with peer_session(state.settings) as session:
        while True:
            try:
                await asyncio.wait_for(sc.wake.wait(), interval)
            except TimeoutError:
                pass
            sc.wake.clear()
            try:
                await scrub_pass(state, session)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scrub_error")

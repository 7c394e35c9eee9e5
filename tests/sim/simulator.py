"""Deterministic simulation of one writer and the segments of 1-3 PGs.

Everything is driven by one `random.Random(seed)`: no clock, no threads, no asyncio.
Each step picks one event (deliver / drop / duplicate a message, start a
mini-transaction, resend, gossip, crash or restart a node, crash the writer, let a
stale writer keep talking). The same seed gives the same schedule.

Nodes run the real `SegmentLog`; the writer runs the real `WriterCore`; recovery runs
the real `plan_recovery`. Members per PG come from `Membership` objects: the placement
(`Sim.memberships`, what topology.json holds). With `SimConfig(rebuilds=True)` nodes are
also lost for good and a simulated supervisor rebuilds their segments through the real
planner and membership transitions (rebuild.py); the writer reloads the placement when a
segment refuses its frames with `stale_membership`.

A segment's state is durable once it acks (accept + persist + ack are one atomic
event); a node crash loses the messages addressed to it while it is down and whatever
was in flight to it, and a restart rebuilds `SegmentLog` from the persisted meta and
the stored (lsn, prev) pairs, exactly like a real node.

Recovery (`Sim.try_recover`, atomic in one step): fence the segments of a random read
quorum of every PG (seal at a new epoch, no new ranges), take their reports,
`plan_recovery`, seal a random write quorum with the plan's epoch and truncations,
copy `plan.to_rereplicate` records to the sealed members, start
`WriterCore(start=plan.start_state())`. The old writer's in-flight messages still
arrive; sometimes the old writer keeps talking (a "stale" writer). Later-contacted
segments answer `needs_seal` and the writer seals them.

Gossip pulls records above the puller's SCL from a peer through `SegmentLog.accept`;
per seed it is restricted to peers of the same volume epoch (as node/gossip.py does)
or allowed across epochs (stray records then reach segments, and accept's filters
must hold).

Checks: VDL never decreases within a writer; recovery's VDL covers every acknowledged
commit and its truncation range none; after healing (all nodes up, no loss, gossip and
pings until quiet) every segment of every PG reaches the read tail at the writer's
epoch, the pages materialized from each one's SCL chain equal a model built from the
committed mini-transactions (no acknowledged commit lost, nothing of an uncommitted or
truncated one visible, no mini-transaction half visible), and the writer can commit.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field

import rebuild

from tidemark_protocol.errors import (
    BackPressure,
    ImplausibleClaim,
    NeedsSeal,
    StaleEpoch,
    StaleMembership,
)
from tidemark_protocol.layout import VolumeLayout
from tidemark_protocol.pages import apply_redo, empty_page, patch_payload
from tidemark_protocol.placement import NodeInfo, place
from tidemark_protocol.quorum import Membership, has_read_quorum, has_write_quorum
from tidemark_protocol.records import Record
from tidemark_protocol.recovery import (
    NoReadQuorum,
    RecordInfo,
    RecoveryPlan,
    SegmentReport,
    plan_recovery,
)
from tidemark_protocol.repair import RepairLimits
from tidemark_protocol.segment import SegmentLog, SegmentMeta, in_ranges
from tidemark_protocol.writer_core import Change, StartState, WriterCore

ZONES = ("a", "b", "c")


class SimFailure(AssertionError):
    pass


# --------------------------------------------------------------------------- nodes
@dataclass
class Segment:
    pg: int
    log: SegmentLog
    store: dict[int, Record] = field(default_factory=dict)
    persisted: SegmentMeta | None = None
    membership: Membership | None = None  # what the supervisor last told this node
    # Rebuild (rebuild.py): pages of a snapshot at base_lsn (the chain's floor) and the
    # LSNs they contain; the hydration state as /v1/status shows it.
    base_lsn: int = 0
    base_pages: dict[int, bytes] = field(default_factory=dict)
    base_lsns: set[int] = field(default_factory=set)
    hydration: str | None = None
    hyd_sources: tuple[str, ...] = ()
    hyd_peers: tuple[str, ...] = ()
    hyd_work: int = 0
    hyd_base: int = 0
    hyd_target: int = 0

    def persist(self, fresh: list[Record], dropped: list[int] = ()) -> None:
        for lsn in dropped:
            self.store.pop(lsn, None)
        for r in fresh:
            self.store[r.lsn] = r
        # A snapshot of the meta (its ranges are tuples: a shallow list copy suffices).
        meta = copy.copy(self.log.meta)
        meta.truncations = list(meta.truncations)
        self.persisted = meta


@dataclass
class Node:
    name: str
    zone: str
    up: bool = True
    lost: bool = False  # permanently dead: never restarts
    segments: dict[int, Segment] = field(default_factory=dict)

    def restart(self) -> None:
        """Rebuild every segment from what was persisted, like a real node start."""
        for seg in self.segments.values():
            meta = copy.copy(seg.persisted)
            meta.truncations = list(meta.truncations)
            stored = [(r.lsn, r.prev_lsn_in_pg) for r in seg.store.values() if r.lsn > meta.floor]
            seg.log = SegmentLog(meta, stored)
            if seg.hydration in rebuild.RUNNING:
                seg.hydration = "failed"  # the hydrate task died with the process
        self.up = True


# --------------------------------------------------------------------------- messages
@dataclass
class Msg:
    kind: str  # write | ack | refuse | seal
    src: str
    dst: str
    writer: int  # writer id (the writer that sent, or is addressed)
    pg: int
    epoch: int = 0
    membership_epoch: int = 0
    records: tuple[Record, ...] = ()
    vdl_hint: int = 0
    scl: int = 0
    error: str = ""
    truncations: tuple[tuple[int, int], ...] = ()


# --------------------------------------------------------------------------- writer
@dataclass
class Mtr:
    writer: int
    epoch: int
    records: list[Record]

    @property
    def cpl(self) -> int:
        return self.records[-1].lsn


@dataclass
class Writer:
    wid: int
    core: WriterCore
    plan: RecoveryPlan | None
    alive: bool = True
    stale: bool = False  # a newer writer took over, but this one keeps talking
    mtrs: list[Mtr] = field(default_factory=list)
    acked_upto: int = 0  # index into mtrs of the first not yet acknowledged
    last_vdl: int = 0

    @property
    def epoch(self) -> int:
        return self.core.volume_epoch


# --------------------------------------------------------------------------- config
@dataclass
class SimConfig:
    steps: int = 800
    pg_count: int = 0  # 0: pick 1-3 from the seed
    pages_per_pg: int = 3
    page_size: int = 32
    lal: int = 0  # 0: pick from the seed
    p_loss: float = 0.0  # 0: pick from the seed
    max_heal_rounds: int = 60
    # True: gossip only with peers at the same volume epoch (what node/gossip.py does);
    # False: across epochs too (stresses SegmentLog with records of a writer it has not
    # been sealed for). None: pick per seed.
    gossip_same_epoch: bool | None = None
    # Recovery seals (fences) the segments of its read quorum before they report. Without
    # it a reporting segment left out of the sealed write quorum can still take the old
    # writer's records, and the old writer can assemble a write quorum the plan missed.
    fence_before_report: bool = True
    # Nodes get lost for good and the simulated supervisor rebuilds their segments with
    # the real planner (rebuild.py). False keeps the original schedules seed for seed.
    rebuilds: bool = False
    # Hydration applies the source's truncation ranges it did not know (dropping the
    # records they void) instead of only recording them; False mirrors node hydration
    # install_base as of issue #5 (see test_hydration_applies_the_sources_truncation_ranges).
    hydrate_applies_ranges: bool = True


class Sim:
    def __init__(self, seed: int, config: SimConfig | None = None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        cfg = self.cfg = config or SimConfig()
        rng = self.rng
        pg_count = cfg.pg_count or rng.randint(1, 3)
        self.layout = VolumeLayout(pg_count, cfg.pages_per_pg, cfg.page_size)
        self.lal = cfg.lal or rng.choice([6, 12, 40, 1000])
        self.w_loss = cfg.p_loss or rng.choice([0.02, 0.1, 0.25])
        self.p_node_crash = rng.choice([0.003, 0.01, 0.02])
        self.p_writer_crash = rng.choice([0.0005, 0.002, 0.005, 0.01])
        self.p_reorder = rng.choice([0.1, 0.4, 0.9])
        self.p_crash_on_ack = rng.choice([0.0, 0.0, 0.02, 0.1])
        self.p_seal = rng.choice([0.05, 0.3, 1.0])  # how eagerly a writer seals on needs_seal
        self.p_gossip = rng.choice([0.005, 0.03, 0.1])
        self.gossip_same_epoch = (
            rng.random() < 0.5 if cfg.gossip_same_epoch is None else cfg.gossip_same_epoch
        )
        self.rebuild = cfg.rebuilds
        # Nodes: 2 or 3 per zone, so PGs spread over different node sets; with rebuilds
        # 3 or 4, so every zone has spares to rebuild on.
        infos = []
        for zone in ZONES:
            for i in range(rng.choice([3, 3, 4] if self.rebuild else [2, 2, 3])):
                infos.append(NodeInfo(f"{zone}{i}", zone))
        self.nodes: dict[str, Node] = {n.name: Node(n.name, n.zone) for n in infos}
        placement = place(list(range(pg_count)), infos)
        self.memberships: dict[int, Membership] = {
            pg: Membership(1, members) for pg, members in placement.items()
        }
        for pg, m in self.memberships.items():
            for name in m.all_members:
                self._create_segment(name, pg, volume_epoch=1, membership_epoch=m.epoch)
        self.net: list[Msg] = []
        self.healing = False
        self.writers: list[Writer] = []
        self.writer: Writer | None = None  # the current (newest) writer, if alive
        self.volume_epoch = 1  # what the control plane last recorded
        self.acked: dict[int, Mtr] = {}  # cpl -> mtr, every commit any writer acknowledged
        self.all_mtrs: list[Mtr] = []
        self.truncations: set[tuple[int, int]] = set()
        self.log: list[str] = []  # event trace (for debugging a failing seed)
        self.stats = {"recoveries": 0, "node_crashes": 0, "stale_refusals": 0, "seals": 0}
        self.stats.update(membership_reloads=0, stale_membership_refusals=0)
        self.clock = 0.0  # simulation steps: the supervisor's clock
        self.aborted_targets: set[tuple[str, int]] = set()
        self.last_waiting: list = []
        if self.rebuild:
            for key in (
                "lost", "repairs_started", "repairs_done", "repairs_aborted", "hydrations",
                "supervisor_crashes", "resumed", "fenced_deleted", "reads",
            ):  # fmt: skip
                self.stats[key] = 0
            self.max_losses = rng.choice([1, 1, 2, 3])
            self.p_rebuild_event = rng.choice([0.1, 0.2, 0.3])
            self.p_lose = rng.choice([0.01, 0.03, 0.1])
            self.p_sup_crash = rng.choice([0.0, 0.02, 0.08])
            timeout = rng.choice([10.0, 40.0, 120.0])
            limits = RepairLimits(node_loss_timeout=timeout, max_concurrent=rng.choice([1, 4]))
            self.sup = rebuild.SimSupervisor(self, limits, timeout=rng.choice([150.0, 400.0]))
        start = StartState(1, 0, 1, {})
        self._new_writer(start, None)

    # -- helpers -----------------------------------------------------------------------
    def fail(self, msg: str) -> None:
        tail = "\n".join(self.log[-40:])
        replay = f"SIM_SEED={self.seed}" + (" SIM_REBUILDS=1" if self.rebuild else "")
        raise SimFailure(f"{msg}\nreplay with {replay}\nlast events:\n{tail}")

    def _create_segment(self, name: str, pg: int, volume_epoch: int, membership_epoch: int) -> None:
        meta = SegmentMeta(pg, volume_epoch=volume_epoch, membership_epoch=membership_epoch)
        seg = Segment(pg, SegmentLog(meta), membership=self.memberships.get(pg))
        seg.persist([])
        self.nodes[name].segments[pg] = seg

    def node_put_segment(self, name: str, pg: int, membership: Membership) -> None:
        """PUT /v1/segments/{pg}: create at the recorded volume epoch, or take a newer
        membership (older frames are then refused with stale_membership)."""
        node = self.nodes[name]
        seg = node.segments.get(pg)
        if seg is None:
            self._create_segment(name, pg, self.volume_epoch, membership.epoch)
            node.segments[pg].membership = membership
            self.log.append(f"{name}/pg{pg} created e{self.volume_epoch} m{membership.epoch}")
        elif membership.epoch >= seg.membership.epoch:
            seg.membership = membership
            seg.log.note_membership_epoch(membership.epoch)
            seg.persist([])

    def set_membership(self, pg: int, membership: Membership) -> None:
        """Hook for membership changes (segment rebuild): new members get empty segments."""
        self.memberships[pg] = membership
        for name in membership.all_members:
            if pg not in self.nodes[name].segments:
                self._create_segment(name, pg, self.volume_epoch, membership.epoch)
        for w in self.writers:
            if w.alive:
                w.core.set_membership(pg, membership)

    def _new_writer(self, start: StartState, plan: RecoveryPlan | None) -> Writer:
        core = WriterCore(self.layout, dict(self.memberships), start, lal=self.lal)
        w = Writer(len(self.writers), core, plan, last_vdl=start.vdl)
        self.writers.append(w)
        self.writer = w
        return w

    def _send(self, msg: Msg) -> None:
        self.net.append(msg)

    # -- writer actions --------------------------------------------------------------------
    def _random_change(self) -> Change:
        rng = self.rng
        page = rng.randrange(self.layout.page_count)
        size = self.layout.page_size
        if rng.random() < 0.15:
            data = bytes(rng.randrange(256) for _ in range(rng.randint(0, size)))
            return Change(page, data, full_image=True)
        n = rng.randint(1, 6)
        off = rng.randint(0, size - n)
        return Change(page, patch_payload(off, bytes(rng.randrange(256) for _ in range(n))))

    def start_mtr(self, w: Writer) -> Mtr | None:
        changes = [self._random_change() for _ in range(self.rng.randint(1, 4))]
        try:
            records = w.core.allocate(changes)
        except BackPressure:
            self.log.append(f"w{w.wid} back-pressure at next={w.core.next_lsn} vdl={w.core.vdl}")
            return None
        mtr = Mtr(w.wid, w.epoch, records)
        w.mtrs.append(mtr)
        self.all_mtrs.append(mtr)
        self.log.append(f"w{w.wid} mtr lsns={[r.lsn for r in records]}")
        by_pg: dict[int, list[Record]] = {}
        for r in records:
            by_pg.setdefault(r.pg, []).append(r)
        for pg, recs in by_pg.items():
            for member in w.core.trackers[pg].membership.all_members:
                self._send_write(w, member, pg, recs)
        return mtr

    def _send_write(self, w: Writer, member: str, pg: int, recs: list[Record]) -> None:
        self._send(
            Msg(
                "write",
                f"w{w.wid}",
                member,
                w.wid,
                pg,
                epoch=w.epoch,
                membership_epoch=w.core.trackers[pg].membership.epoch,
                records=tuple(recs),
                vdl_hint=w.core.vdl,
            )
        )

    def resend(self, w: Writer) -> None:
        """Re-send what is not yet in a write quorum to members that lack it."""
        for pg, unstable in w.core.unstable.items():
            for member in w.core.trackers[pg].membership.all_members:
                scl = w.core.scl(pg, member)
                recs = [r for r in unstable if r.lsn > scl]
                if recs or self.rng.random() < 0.3:  # empty write: a ping that returns the SCL
                    self._send_write(w, member, pg, recs)

    def _on_writer_msg(self, msg: Msg) -> None:
        w = self.writers[msg.writer]
        if not w.alive:
            return
        if msg.kind == "refuse":
            eager = self.healing or self.rng.random() < self.p_seal
            if msg.error == "needs_seal" and not w.stale and eager:
                # The node has not seen this writer's epoch: send it the seal.
                self._send(
                    Msg(
                        "seal",
                        f"w{w.wid}",
                        msg.src,
                        w.wid,
                        msg.pg,
                        epoch=w.epoch,
                        truncations=tuple(w.plan.truncations) if w.plan else (),
                    )
                )
            elif msg.error == "stale_epoch":
                self.stats["stale_refusals"] += 1
            elif msg.error == "stale_membership":
                # Like the real writer: reload the placement and re-send to the members.
                self.stats["stale_membership_refusals"] += 1
                placement = self.memberships[msg.pg]
                if placement.epoch > w.core.trackers[msg.pg].membership.epoch:
                    w.core.set_membership(msg.pg, placement)
                    self.stats["membership_reloads"] += 1
                    self.log.append(f"w{w.wid} reloads pg{msg.pg} membership e{placement.epoch}")
                    self._after_vdl(w)
                    for member in placement.all_members:
                        scl = w.core.scl(msg.pg, member)
                        recs = [r for r in w.core.unstable[msg.pg] if r.lsn > scl]
                        self._send_write(w, member, msg.pg, recs)
            return
        assert msg.kind == "ack"
        w.core.on_ack(msg.pg, msg.src, msg.scl)
        self._after_vdl(w)

    def _after_vdl(self, w: Writer) -> None:
        vdl = w.core.vdl
        if vdl < w.last_vdl:
            self.fail(f"writer w{w.wid}: VDL went down {w.last_vdl} -> {vdl}")
        w.last_vdl = vdl
        while w.acked_upto < len(w.mtrs) and w.mtrs[w.acked_upto].cpl <= vdl:
            mtr = w.mtrs[w.acked_upto]
            self.acked[mtr.cpl] = mtr
            self.log.append(f"w{w.wid} ACK commit cpl={mtr.cpl} (vdl={vdl})")
            w.acked_upto += 1
            if w is self.writer and not self.healing and self.rng.random() < self.p_crash_on_ack:
                # The nastiest moment: a commit was just acknowledged.
                self.crash_writer(keep_talking=self.rng.random() < 0.5)

    # -- node side ---------------------------------------------------------------------------
    def _on_node_msg(self, msg: Msg) -> None:
        node = self.nodes[msg.dst]
        if not node.up:
            return  # lost with the crashed node
        seg = node.segments.get(msg.pg)
        if seg is None:
            return
        log = seg.log
        if msg.kind == "seal":
            try:
                result = log.seal(msg.epoch, msg.truncations)
            except StaleEpoch:
                self._reply(msg, "refuse", seg, "stale_epoch")
                return
            seg.persist([], result.dropped)
            self.stats["seals"] += 1
            self.log.append(
                f"{node.name}/pg{msg.pg} sealed e{msg.epoch} scl {result.scl_before}->{result.scl_after}"
            )
            self._reply(msg, "ack", seg)
            return
        assert msg.kind == "write"
        try:
            log.check_write(msg.epoch, msg.membership_epoch, msg.vdl_hint, msg.records)
        except ImplausibleClaim as exc:
            self.fail(f"{node.name}/pg{msg.pg} refuses a real writer's claims: {exc}")
        except StaleMembership:
            self._reply(msg, "refuse", seg, "stale_membership")
            return
        except StaleEpoch:
            self._reply(msg, "refuse", seg, "stale_epoch")
            return
        except NeedsSeal:
            self._reply(msg, "refuse", seg, "needs_seal")
            return
        if msg.epoch != log.meta.volume_epoch or msg.membership_epoch < log.meta.membership_epoch:
            self.fail(f"{node.name}/pg{msg.pg} accepts a write at a stale epoch: {msg}")
        fresh = log.accept(msg.records)  # a frame never raises the membership epoch
        log.note_vdl(msg.vdl_hint)
        seg.persist(fresh)
        self._reply(msg, "ack", seg)

    def _reply(self, msg: Msg, kind: str, seg: Segment, error: str = "") -> None:
        self._send(Msg(kind, msg.dst, msg.src, msg.writer, msg.pg, scl=seg.log.scl, error=error))

    def gossip(self, pg: int, puller: str, peer: str) -> None:
        a, b = self.nodes[puller], self.nodes[peer]
        if not (a.up and b.up):
            return
        sa, sb = a.segments.get(pg), b.segments.get(pg)
        if sa is None or sb is None:
            return
        if sa.hydration in ("snapshot", "log"):
            return  # its base comes from a snapshot first (node/tidemark_node/hydration/)
        if self.gossip_same_epoch and sa.log.meta.volume_epoch != sb.log.meta.volume_epoch:
            return  # like the real node: gossip only with peers at the same volume epoch
        after = sa.log.scl
        offered = sorted((r for r in sb.store.values() if r.lsn > after), key=lambda r: r.lsn)
        fresh = sa.log.accept(offered[:50])
        if fresh:
            sa.persist(fresh)
            self.log.append(
                f"gossip pg{pg} {peer}->{puller}: {[r.lsn for r in fresh]} scl={sa.log.scl}"
            )

    # -- recovery ---------------------------------------------------------------------------
    def _report(self, name: str, pg: int) -> SegmentReport:
        seg = self.nodes[name].segments[pg]
        meta = seg.log.meta
        return SegmentReport(
            name,
            meta.volume_epoch,
            meta.scl,
            meta.floor,
            meta.vdl_hint,
            list(meta.truncations),
            [
                RecordInfo(r.lsn, r.prev_lsn_in_pg, int(r.flags))
                for r in seg.store.values()
                if r.lsn > meta.floor
            ],
        )

    def try_recover(self) -> bool:
        """A new writer: read quorum reports, plan, seal a write quorum, re-replicate."""
        rng = self.rng
        reports: dict[int, list[SegmentReport]] = {}
        seal_sets: dict[int, list[str]] = {}
        read_sets: dict[int, list[str]] = {}
        for pg, m in self.memberships.items():
            # A rebuild target may not have its segment yet (it would answer 404).
            up = [n for n in m.all_members if self.nodes[n].up and pg in self.nodes[n].segments]
            if not has_write_quorum(m, up):
                return False  # cannot seal: wait for nodes to come back
            k = min(len(up), 3 if rng.random() < 0.7 else rng.randint(min(3, len(up)), len(up)))
            chosen = rng.sample(up, k)
            while not has_read_quorum(m, chosen):
                chosen = rng.sample(up, min(len(up), len(chosen) + 1))
            read_sets[pg] = chosen
            k = min(len(up), 4 if rng.random() < 0.7 else rng.randint(min(4, len(up)), len(up)))
            wq = rng.sample(up, k)
            while not has_write_quorum(m, wq):
                wq = rng.sample(up, min(len(up), len(wq) + 1))
            seal_sets[pg] = wq
        min_epoch = self.volume_epoch
        if self.cfg.fence_before_report:
            # Fence first: every segment that reports is sealed at a new epoch (no new
            # ranges) before it answers, so the old writer cannot add to what it reported.
            min_epoch += 1
            for pg, names in read_sets.items():
                for name in names:
                    seg = self.nodes[name].segments[pg]
                    seg.log.seal(min_epoch, [])
                    seg.persist([])
        for pg, names in read_sets.items():
            reports[pg] = [self._report(n, pg) for n in names]
        try:
            plan = plan_recovery(reports, self.memberships, self.lal, min_epoch=min_epoch)
        except NoReadQuorum as exc:  # pragma: no cover - chosen sets are read quorums
            self.fail(f"unexpected NoReadQuorum: {exc}")
        max_acked = max(self.acked, default=0)
        if plan.vdl < max_acked:
            self.fail(f"recovery VDL {plan.vdl} < acknowledged commit {max_acked}")
        for cpl in self.acked:
            if in_ranges(cpl, [plan.truncation]):
                self.fail(f"recovery truncates acknowledged commit {cpl}: {plan.truncation}")
        # Records to re-replicate, taken from their holders before anything is sealed.
        copies: dict[int, list[Record]] = {}
        for pg, lsns in plan.to_rereplicate.items():
            recs = []
            for lsn, holders in sorted(lsns.items()):
                rec = None
                for h in holders:
                    rec = self.nodes[h].segments[pg].store.get(lsn)
                    if rec is not None:
                        break
                if rec is None:
                    self.fail(f"pg {pg}: record {lsn} to re-replicate is on none of {holders}")
                recs.append(rec)
            copies[pg] = recs
        self.volume_epoch = plan.volume_epoch
        self.truncations.update(plan.truncations)
        for pg, names in seal_sets.items():
            for name in names:
                seg = self.nodes[name].segments[pg]
                result = seg.log.seal(plan.volume_epoch, plan.truncations)
                seg.persist([], result.dropped)
                fresh = seg.log.accept(copies.get(pg, []))
                seg.persist(fresh)
        self.stats["recoveries"] += 1
        w = self._new_writer(plan.start_state(), plan)
        for pg, names in seal_sets.items():
            for name in names:
                w.core.on_ack(pg, name, self.nodes[name].segments[pg].log.scl)
        self._after_vdl(w)
        self.log.append(
            f"RECOVERY w{w.wid} epoch={plan.volume_epoch} vdl={plan.vdl} vcl={plan.vcl} "
            f"trunc={plan.truncation} tails={plan.pg_tails}"
        )
        return True

    def crash_writer(self, keep_talking: bool) -> None:
        w = self.writer
        if w is None:
            return
        self.log.append(f"CRASH writer w{w.wid} (stale={keep_talking}) vdl={w.core.vdl}")
        if keep_talking:
            w.stale = True
        else:
            w.alive = False
        self.writer = None

    # -- the schedule ------------------------------------------------------------------------
    def step(self) -> None:
        rng = self.rng
        if self.rebuild and rng.random() < self.p_rebuild_event:
            self.rebuild_event()
            return
        if self.writer is None and rng.random() < 0.5:
            self.try_recover()
            return
        r = rng.random()
        net = self.net
        if r < 0.50:
            # Deliver a few messages: mostly the oldest (FIFO-ish), sometimes any (reorder).
            for _ in range(rng.randint(1, 12)):
                if not self.net:
                    break
                i = rng.randrange(len(self.net)) if rng.random() < self.p_reorder else 0
                self._deliver(self.net.pop(i))
        elif r < 0.50 + self.w_loss * 0.2:
            if net:  # message loss
                net.pop(rng.randrange(len(net)))
        elif r < 0.58:
            if net:  # duplication
                net.append(copy.copy(net[rng.randrange(len(net))]))
        elif r < 0.72:
            if self.writer is not None:
                self.start_mtr(self.writer)
        elif r < 0.77:
            if self.writer is not None:
                self.resend(self.writer)
        elif r < 0.77 + self.p_gossip:
            pg = rng.randrange(self.layout.pg_count)
            if self.rebuild:
                # Like node/gossip.py: a segment pulls from the members it was told.
                holders = sorted(n for n, node in self.nodes.items() if pg in node.segments)
                a = rng.choice(holders)
                peers = [p for p in self.nodes[a].segments[pg].membership.all_members if p != a]
                if peers:
                    self.gossip(pg, a, rng.choice(peers))
            else:
                members = list(self.memberships[pg].all_members)
                a, b = rng.sample(members, 2)
                self.gossip(pg, a, b)
        elif r < 0.87:
            pass  # idle: time passes
        elif r < 0.87 + self.p_node_crash:
            up = [n for n in self.nodes.values() if n.up]
            if len(up) > 1:
                node = rng.choice(up)
                node.up = False
                self.stats["node_crashes"] += 1
                self.net = [m for m in net if m.dst != node.name]
                self.log.append(f"CRASH node {node.name}")
        elif r < 0.89:
            pass
        elif r < 0.93:
            down = [n for n in self.nodes.values() if not n.up and not n.lost]
            if down:
                node = rng.choice(down)
                node.restart()
                self.log.append(f"RESTART node {node.name}")
        elif r < 0.93 + self.p_writer_crash:
            self.crash_writer(keep_talking=rng.random() < 0.4)
        elif r < 0.97:
            pass
        else:
            stale = [w for w in self.writers if w.alive and w.stale]
            if stale:
                w = rng.choice(stale)
                if rng.random() < 0.6:
                    self.start_mtr(w)
                else:
                    self.resend(w)

    # -- rebuilds (rebuild.py) -------------------------------------------------------------
    def rebuild_event(self) -> None:
        rng = self.rng
        sup = self.sup
        r = rng.random()
        if r < 0.35:
            if sup.alive:
                sup.tick()
        elif r < 0.65:
            self._hydration_step()
        elif r < 0.65 + self.p_lose:
            self.lose_node()
        elif r < 0.75:
            if sup.alive and rng.random() < self.p_sup_crash * 5:
                sup.crash()
            elif not sup.alive and rng.random() < 0.3:
                sup.restart()
        elif r < 0.9:
            self.read_check()
        elif r < 0.93:
            if sup.tasks and not self.healing:  # the writer dies mid-change
                self.crash_writer(keep_talking=rng.random() < 0.4)

    def _hydrating(self) -> list[tuple[str, int]]:
        return [
            (name, pg)
            for name, node in sorted(self.nodes.items())
            if node.up
            for pg, seg in sorted(node.segments.items())
            if seg.hydration in rebuild.RUNNING
        ]

    def _hydration_step(self) -> None:
        running = self._hydrating()
        if running:
            rebuild.hydration_work(self, *self.rng.choice(running))

    def _hydrate_all(self) -> None:
        for name, pg in self._hydrating():
            rebuild.hydration_work(self, name, pg)

    def lose_node(self) -> None:
        """Declare a node lost for good. Only losses the fleet can heal from: every member
        set keeps a write quorum of nodes not lost, every zone 2 nodes not lost. Half the
        time the victim shares a PG with a change in progress (a second loss in a PG)."""
        if self.stats["lost"] >= self.max_losses:
            return
        cands = []
        for name, node in sorted(self.nodes.items()):
            if node.lost:
                continue
            lost = {n for n, x in self.nodes.items() if x.lost} | {name}
            zone_left = sum(1 for x in self.nodes.values() if x.zone == node.zone and x.name not in lost)
            if zone_left < 2:
                continue
            if all(
                len(set(s) - lost) >= 4 for m in self.memberships.values() for s in m.sets
            ):
                cands.append(name)
        if not cands:
            return
        busy = {n for m in self.memberships.values() if m.next_members for n in m.all_members}
        second = [c for c in cands if c in busy]
        name = self.rng.choice(second if second and self.rng.random() < 0.5 else cands)
        node = self.nodes[name]
        node.lost = True
        if node.up:
            node.up = False
            self.net = [m for m in self.net if m.dst != name]
        self.stats["lost"] += 1
        self.log.append(f"LOST node {name}")

    def read_check(self) -> None:
        """The current writer reads a PG at its VDL from a segment it believes complete;
        the node checks the epoch and its SCL (as GET /pages does). What it serves must be
        the committed model at that point: a fenced or lagging segment never serves
        stale data as current."""
        w = self.writer
        if w is None or not w.alive or w.stale:
            return
        pg = self.rng.randrange(self.layout.pg_count)
        at = w.core.vdl
        tail = w.core.read_tail(pg, at)
        for name in w.core.read_candidates(pg, at):
            node = self.nodes[name]
            seg = node.segments.get(pg)
            if not node.up or seg is None:
                continue  # 404 / no answer: hedge to the next
            if seg.log.meta.volume_epoch != w.epoch or seg.log.scl < tail:
                continue  # stale_epoch / needs_seal / not_complete
            self.stats["reads"] += 1
            truncs = sorted(self.truncations)
            got, used = self._read_pg(seg, at, truncs)
            want_lsns: set[int] = set()
            want: dict[int, bytes] = {}
            size = self.layout.page_size
            for m in sorted(self.all_mtrs, key=lambda m: m.cpl):
                if m.cpl > at or any(in_ranges(r.lsn, truncs) for r in m.records):
                    continue
                for r in m.records:
                    if r.pg == pg:
                        want[r.page] = apply_redo(want.get(r.page, b""), r, size)
                        want_lsns.add(r.lsn)
            if used != want_lsns or any(
                got.get(p, empty_page(size)) != want.get(p, empty_page(size)) for p in want
            ):
                self.fail(
                    f"read of pg {pg} at {at} from {name} (scl {seg.log.scl}, tail {tail}) is "
                    f"not the committed state: extra {sorted(used - want_lsns)}, "
                    f"missing {sorted(want_lsns - used)}"
                )
            return

    def _repairs_settled(self) -> bool:
        for pg, m in self.memberships.items():
            if m.next_members is not None or pg in self.sup.tasks:
                return False
            if any(self.nodes[n].lost for n in m.members):
                return False
        return True

    def _heal_rebuilds(self, w: Writer) -> None:
        """Run the supervisor (restarted if it crashed) with every node but the lost
        ones up, until every PG has 6 live members again."""
        if not self.sup.alive:
            self.sup.restart()
        for _round in range(400):
            self.clock += 5  # the lost nodes' wait-before-rebuild passes
            self.sup.tick()
            self._hydrate_all()
            for _inner in range(5000):
                if not self.net:
                    break
                self._deliver(self.net.pop(self.rng.randrange(len(self.net))))
            for pg, m in self.memberships.items():
                for a in m.all_members:
                    for b in m.all_members:
                        if a != b:
                            self.gossip(pg, a, b)
            w = self.writer
            for pg in self.memberships:
                for member in w.core.trackers[pg].membership.all_members:
                    recs = [r for r in w.core.unstable[pg] if r.lsn > w.core.scl(pg, member)]
                    self._send_write(w, member, pg, recs)
            if self._repairs_settled():
                break
        else:
            self.fail(
                f"repairs did not finish after healing: placement {self.memberships}, "
                f"tasks {self.sup.tasks}, waiting {self.last_waiting}"
            )
        # Tell every member the final membership (the executor stops at a write quorum;
        # the writer's frames carry the epoch to the rest).
        for pg in self.memberships:
            for name in self.memberships[pg].members:
                self.sup.put_segment(name, pg, self.memberships[pg])
        self.sup.tick()

    def _check_placement(self, w: Writer) -> None:
        zones_of = {n: node.zone for n, node in self.nodes.items()}
        for pg, m in self.memberships.items():
            if m.next_members is not None:
                self.fail(f"pg {pg}: a membership change is still in progress: {m}")
            if len(m.members) != 6 or len(set(m.members)) != 6:
                self.fail(f"pg {pg}: members {m.members} are not 6 distinct nodes")
            per_zone = {z: sum(zones_of[n] == z for n in m.members) for z in ZONES}
            if any(c != 2 for c in per_zone.values()):
                self.fail(f"pg {pg}: members {m.members} are not 2 per zone: {per_zone}")
            for n in m.members:
                node = self.nodes[n]
                if node.lost or not node.up or pg not in node.segments:
                    self.fail(f"pg {pg}: member {n} is not a healthy segment")
                seg = node.segments[pg]
                if seg.log.meta.membership_epoch != m.epoch:
                    self.fail(
                        f"pg {pg}: {n} is at membership epoch {seg.log.meta.membership_epoch}, "
                        f"placement at {m.epoch}"
                    )
            if w.core.trackers[pg].membership != m:
                self.fail(f"pg {pg}: writer uses {w.core.trackers[pg].membership}, placement {m}")
        for name, node in self.nodes.items():
            if not node.up:
                continue
            for pg in node.segments:
                if name in self.memberships[pg].all_members:
                    continue
                if (name, pg) in self.aborted_targets:
                    self.stats["leaked_after_abort"] = self.stats.get("leaked_after_abort", 0) + 1
                    continue  # the playground leaves an aborted target's segment (reported)
                self.fail(f"{name} still holds a segment of pg {pg} it is no member of")

    def run(self) -> None:
        try:
            for _ in range(self.cfg.steps):
                self.clock += 1
                self.step()
            self.heal()
            self.check()
        except SimFailure:
            raise
        except Exception as exc:  # a protocol call blew up: report it with the seed
            self.fail(f"unexpected {type(exc).__name__}: {exc}")

    # -- healing and the final check ------------------------------------------------------------
    def heal(self) -> None:
        self.healing = True
        for w in self.writers:
            if w.stale:
                w.alive = False
        for node in self.nodes.values():
            if not node.up and not node.lost:
                node.restart()
        self.net = [
            m for m in self.net if self.writers[m.writer].alive or m.kind in ("write", "seal")
        ]
        if self.writer is None and not self.try_recover():
            self.fail("recovery impossible with every node up")
        w = self.writer
        if self.rebuild:
            self._heal_rebuilds(w)
        self._settle(w)
        # Liveness: with everything healed, the writer must be able to commit again.
        mtr = self.start_mtr(w)
        if mtr is None:
            self.fail(f"writer w{w.wid} cannot allocate after healing (back-pressure)")
        self._settle(w)
        if mtr.cpl not in self.acked:
            self.fail(
                f"after healing, a new commit {mtr.cpl} is not acknowledged (VDL {w.core.vdl})"
            )

    def _settle(self, w: Writer) -> None:
        """Deliver everything, gossip all pairs and ping all members until nothing changes."""
        quiet = 0
        for _round in range(self.cfg.max_heal_rounds):
            before = self._fingerprint()
            for _inner in range(5000):
                if not self.net:
                    break
                self._deliver(self.net.pop(self.rng.randrange(len(self.net))))
            for pg, m in self.memberships.items():
                members = list(m.all_members)
                for a in members:
                    for b in members:
                        if a != b:
                            self.gossip(pg, a, b)
            if self.rebuild:
                self._hydrate_all()
            # Ping every member so the writer learns SCLs (and seals the unsealed).
            for pg in self.memberships:
                for member in w.core.trackers[pg].membership.all_members:
                    recs = [r for r in w.core.unstable[pg] if r.lsn > w.core.scl(pg, member)]
                    self._send_write(w, member, pg, recs)
            after = self._fingerprint()
            quiet = quiet + 1 if after == before else 0
            if quiet >= 2:
                break
        else:
            self.fail("healing did not become quiet")
        for _inner in range(5000):
            if not self.net:
                break
            self._deliver(self.net.pop(0))

    def _deliver(self, msg: Msg) -> None:
        if msg.kind in ("write", "seal"):
            self._on_node_msg(msg)
        else:
            self._on_writer_msg(msg)

    def _fingerprint(self) -> tuple:
        w = self.writer
        return (
            w.core.vdl,
            tuple(
                (n.name, pg, s.log.scl, s.log.meta.volume_epoch)
                for n in self.nodes.values()
                for pg, s in sorted(n.segments.items())
            ),
        )

    def check(self) -> None:
        w = self.writer
        vdl = w.core.vdl
        if self.rebuild:
            self._check_placement(w)
        if w.core.unstable and any(w.core.unstable.values()):
            self.fail(
                f"after healing, records still not in a write quorum: {dict(w.core.unstable)}"
            )
        truncs = sorted(self.truncations)
        committed = [
            m
            for m in self.all_mtrs
            if m.cpl <= vdl and not any(in_ranges(r.lsn, truncs) for r in m.records)
        ]
        # (c) and (a): every acknowledged commit survives.
        for cpl, mtr in self.acked.items():
            if cpl > vdl:
                self.fail(f"acknowledged commit {cpl} above final VDL {vdl}")
            if any(in_ranges(r.lsn, truncs) for r in mtr.records):
                self.fail(f"acknowledged commit {cpl} was truncated by {truncs}")
        # Partially visible mini-transactions: an MTR must be all in or all out.
        for m in self.all_mtrs:
            inside = [r.lsn <= vdl and not in_ranges(r.lsn, truncs) for r in m.records]
            if any(inside) and not all(inside):
                self.fail(f"mini-transaction {[r.lsn for r in m.records]} straddles VDL {vdl}")
        expected: dict[int, bytes] = {}
        expected_lsns: dict[int, set[int]] = {pg: set() for pg in self.memberships}
        size = self.layout.page_size
        for m in sorted(committed, key=lambda m: m.cpl):
            for r in m.records:
                expected[r.page] = apply_redo(expected.get(r.page, b""), r, size)
                expected_lsns[r.pg].add(r.lsn)
        for pg, m in self.memberships.items():
            tail = w.core.read_tail(pg, vdl)
            readers = [
                n
                for n in m.all_members
                if self.nodes[n].segments[pg].log.scl >= tail
                and self.nodes[n].segments[pg].log.meta.volume_epoch == w.epoch
            ]
            if len(readers) != len(m.all_members):
                behind = {
                    n: (
                        self.nodes[n].segments[pg].log.scl,
                        self.nodes[n].segments[pg].log.meta.volume_epoch,
                    )
                    for n in m.all_members
                    if n not in readers
                }
                self.fail(
                    f"pg {pg}: after healing, segments {behind} (scl, epoch) do not reach "
                    f"read tail {tail} at epoch {w.epoch}"
                )
            for name in readers:
                seg = self.nodes[name].segments[pg]
                got, used = self._read_pg(seg, vdl, truncs)
                if used != expected_lsns[pg]:
                    extra = sorted(used - expected_lsns[pg])
                    missing = sorted(expected_lsns[pg] - used)
                    self.fail(
                        f"pg {pg} on {name} at VDL {vdl}: visible LSNs differ from the committed "
                        f"model: extra (uncommitted/partial) {extra}, missing {missing}"
                    )
                lo = pg * self.layout.pages_per_pg
                for page in range(lo, lo + self.layout.pages_per_pg):
                    want = expected.get(page, empty_page(size))
                    if page in expected:
                        want = expected[page]
                    if got.get(page, empty_page(size)) != want:
                        self.fail(
                            f"page {page} on {name} differs from the committed model at {vdl}"
                        )

    def _read_pg(self, seg: Segment, vdl: int, truncs) -> tuple[dict[int, bytes], set[int]]:
        """Materialize a PG's pages at `vdl` the way a node serves a read: every stored
        record of the PG's SCL chain at or below the read point, in LSN order. No
        truncation filter here: the segment's own bookkeeping must have dropped strays."""
        size = self.layout.page_size
        # A hydrated segment starts from its snapshot's pages (base at its floor).
        pages: dict[int, bytes] = dict(seg.base_pages) if seg.base_lsn <= vdl else {}
        used: set[int] = set(seg.base_lsns) if seg.base_lsn <= vdl else set()
        if seg.base_lsn > vdl:
            self.fail(f"pg {seg.pg}: read at {vdl} below the segment's snapshot {seg.base_lsn}")
        for lsn in sorted(seg.store):
            if lsn > vdl:
                break
            if lsn <= seg.base_lsn:
                continue
            if lsn > seg.log.scl or not seg.log.has(lsn):
                continue  # not part of the segment's complete chain
            r = seg.store[lsn]
            pages[r.page] = apply_redo(pages.get(r.page, b""), r, size)
            used.add(lsn)
        return pages, used


def run_seed(seed: int, config: SimConfig | None = None) -> Sim:
    sim = Sim(seed, config)
    sim.run()
    return sim

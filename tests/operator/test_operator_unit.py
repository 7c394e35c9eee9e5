"""Pure logic of the operator: desired objects, placement CAS, status."""

from __future__ import annotations

import time
import types
import typing
from pathlib import Path

import annotated_types
import pytest
import yaml
from pydantic import BaseModel, StringConstraints
from pydantic.fields import FieldInfo

from tidemark_operator import placement as pl
from tidemark_operator.model import RUN_LOCAL_LABEL, SPEC_HASH, ZONE_LABEL, resolve_zones
from tidemark_operator.resources import desired_objects, pod_disruption_budget, statefulset
from tidemark_operator.spec import ClusterSpec, parse_spec
from tidemark_operator.status import PodObs, compute_status, healthy_segments
from tidemark_operator.topology import topology_from_objects

pytestmark = [pytest.mark.unit, pytest.mark.operator]

ROOT = Path(__file__).resolve().parents[2]
ZONES = ["zone-a", "zone-b", "zone-c"]
OWNER = {"apiVersion": "tidemark.dev/v1alpha1", "kind": "AuroraCluster",
         "metadata": {"name": "demo", "uid": "u-1"}}


def spec(**kw: object) -> ClusterSpec:
    return parse_spec({"nodesPerZone": 2, "volume": {"pgCount": 4}, **kw})


def test_spec_defaults() -> None:
    s = parse_spec({})
    v = s.volume
    assert (s.nodes_per_zone, v.pg_count, v.pages_per_pg, v.page_size) == (2, 4, 64, 4096)
    assert s.zones is None and s.deletion_policy == "Retain"
    assert parse_spec(None) == s == ClusterSpec()


def test_statefulset_pinned_to_zone_with_command_probes_and_owner() -> None:
    sts = statefulset("demo", "ns", "zone-b", spec(), OWNER, node_command=("/venv/bin/tidemark",))
    assert sts["metadata"]["name"] == "demo-zone-b"
    assert sts["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert sts["spec"]["replicas"] == 2
    pod = sts["spec"]["template"]
    assert pod["metadata"]["labels"][RUN_LOCAL_LABEL] == "true"
    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": ZONE_LABEL, "operator": "In", "values": ["zone-b"]}]
    assert pod["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    c = pod["spec"]["containers"][0]
    assert c["command"][:3] == ["/venv/bin/tidemark", "node", "run"]
    assert "$(POD_NAME)" in c["command"]
    # every address of the pod: its IP for peers, its 127.0.0.1 for a port-forward
    assert c["command"][c["command"].index("--host") + 1] == "0.0.0.0"
    assert {"name": "ZONE", "value": "zone-b"} in c["env"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    # PVCs by default, emptyDir when ephemeral
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "10Gi"
    eph = statefulset("demo", "ns", "zone-b", spec(storage={"ephemeral": True}))
    assert "volumeClaimTemplates" not in eph["spec"]
    assert {"name": "data", "emptyDir": {}} in eph["spec"]["template"]["spec"]["volumes"]


def test_deletion_policy_maps_to_pvc_retention() -> None:
    keep = statefulset("d", "ns", "z", spec())
    drop = statefulset("d", "ns", "z", spec(deletionPolicy="Delete"))
    assert keep["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    assert drop["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"


def test_spec_hash_changes_with_spec_only() -> None:
    a = statefulset("d", "ns", "z", spec())
    b = statefulset("d", "ns", "z", spec())
    c = statefulset("d", "ns", "z", spec(nodesPerZone=3))
    assert a["metadata"]["annotations"][SPEC_HASH] == b["metadata"]["annotations"][SPEC_HASH]
    assert a["metadata"]["annotations"][SPEC_HASH] != c["metadata"]["annotations"][SPEC_HASH]


def test_pdb_never_lets_a_pg_lose_write_quorum() -> None:
    for n in (2, 3, 5):
        pdb = pod_disruption_budget("d", "ns", spec(nodesPerZone=n))
        total = 3 * n
        allowed_down = total - pdb["spec"]["minAvailable"]
        # worst case: every evicted pod holds a segment of the same PG; 6 - down >= 4 and
        # one more unplanned failure must still leave a write quorum
        assert 6 - allowed_down - 1 >= 4


def test_desired_objects() -> None:
    objs = desired_objects("demo", "ns", ZONES, spec(), OWNER)
    kinds = [o["kind"] for o in objs]
    assert kinds == ["Service", "StatefulSet", "StatefulSet", "StatefulSet", "PodDisruptionBudget"]
    svc = objs[0]
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"]
    assert all(o["metadata"]["ownerReferences"][0]["name"] == "demo" for o in objs)


def test_resolve_zones() -> None:
    nodes = {"zone-a": 2, "zone-b": 2, "zone-c": 1}
    assert resolve_zones(spec(), nodes)[0] == ZONES
    zones, reason, msg = resolve_zones(spec(), {"zone-a": 2, "zone-b": 2})
    assert zones is None and reason == "ZoneDiscoveryFailed" and "exactly 3" in msg
    zones, reason, msg = resolve_zones(spec(zones=["zone-a", "zone-b", "zone-x"]), nodes)
    assert zones is None and reason == "ZoneUnavailable" and "zone-x" in msg


def test_placement_two_per_zone_and_growth_keeps_existing() -> None:
    doc = pl.desired_placement("demo", ZONES, spec(), None)
    assert len(doc["pgs"]) == 4
    for m in doc["pgs"].values():
        assert m["epoch"] == 1 and len(set(m["members"])) == 6
        for z in ZONES:
            assert sum(1 for p in m["members"] if f"-{z}-" in p) == 2
    # same spec again: nothing changes
    assert pl.desired_placement("demo", ZONES, spec(), doc) == doc
    # scale nodes up and add PGs: old PGs keep members, new PGs use the new pods
    grown = pl.desired_placement("demo", ZONES, spec(nodesPerZone=4, volume={"pgCount": 6}), doc)
    for k, v in doc["pgs"].items():
        assert grown["pgs"][k] == v
    new_members = set(grown["pgs"]["4"]["members"]) | set(grown["pgs"]["5"]["members"])
    assert "demo-zone-a-2" in new_members and "demo-zone-a-3" in new_members
    assert grown["zones"]["zone-a"] == [f"demo-zone-a-{i}" for i in range(4)]


def test_compare_and_swap_create_replace_and_conflict() -> None:
    store: dict[str, object] = {"cm": None, "rv": 0}

    def read():
        return store["cm"]

    def create(obj):
        if store["cm"] is not None:
            raise pl.Conflict("exists")
        store["rv"] += 1
        obj["metadata"]["resourceVersion"] = str(store["rv"])
        store["cm"] = obj

    def replace(obj):
        if obj["metadata"]["resourceVersion"] != store["cm"]["metadata"]["resourceVersion"]:
            raise pl.Conflict("rv mismatch")
        store["rv"] += 1
        obj["metadata"]["resourceVersion"] = str(store["rv"])
        store["cm"] = obj

    def build(doc, rv):
        return pl.configmap("demo", "ns", doc, resource_version=rv)

    def upd(cur):
        return pl.desired_placement("demo", ZONES, spec(), cur)

    doc, changed = pl.compare_and_swap(read, create, replace, upd, build)
    assert changed and store["rv"] == 1
    doc2, changed = pl.compare_and_swap(read, create, replace, upd, build)
    assert not changed and doc2 == doc and store["rv"] == 1

    # a concurrent writer bumps the version between our read and our write: Conflict
    def racing_read():
        cm = read()
        store["cm"] = {**cm, "metadata": {**cm["metadata"], "resourceVersion": "99"}}
        return cm

    def grow(cur):
        return pl.desired_placement("demo", ZONES, spec(volume={"pgCount": 5}), cur)

    with pytest.raises(pl.Conflict):
        pl.compare_and_swap(racing_read, create, replace, grow, build)
    # the next round, with a fresh read, succeeds
    doc3, changed = pl.compare_and_swap(read, create, replace, grow, build)
    assert changed and len(doc3["pgs"]) == 5


def _statuses(doc, up: set[str], vdl: int = 7):
    out = {}
    for pod in pl.pods_of(doc):
        if pod in up:
            segs = [{"pg": int(pg), "vdl_hint": vdl, "volume_epoch": 0}
                    for pg, m in doc["pgs"].items() if pod in m["members"]]
            out[pod] = {"node": pod, "generation": 1, "segments": segs}
        else:
            out[pod] = None
    return out


def _pods(doc):
    return [PodObs(p, p.split("-")[1] + "-" + p.split("-")[2], "127.0.0.1", True)
            for p in sorted(pl.pods_of(doc))]


def test_status_ready_degraded_and_quorum_lost() -> None:
    doc = pl.desired_placement("demo", ZONES, spec(), None)
    pods = _pods(doc)
    everyone = {p.name for p in pods}
    st = compute_status(3, ZONES, doc, pods, _statuses(doc, everyone), None, "T0")
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Ready"]["status"] == "True" and conds["Degraded"]["status"] == "False"
    assert st["healthyPGs"] == "4/4" and st["readyNodes"] == "6/6" and st["vdl"] == 7
    assert st["observedGeneration"] == 3 and conds["Ready"]["observedGeneration"] == 3

    # one pod down: every PG still writable (5/6): Ready, Degraded
    st2 = compute_status(3, ZONES, doc, pods, _statuses(doc, everyone - {"demo-zone-a-0"}), st, "T1")
    c2 = {c["type"]: c for c in st2["conditions"]}
    assert c2["Ready"]["status"] == "True" and c2["Ready"]["lastTransitionTime"] == "T0"
    assert c2["Degraded"]["status"] == "True" and c2["Degraded"]["lastTransitionTime"] == "T1"
    assert st2["healthyPGs"] == "0/4" and st2["readyNodes"] == "5/6"

    # three pods down (one whole zone + one more): write quorum lost
    down = {"demo-zone-a-0", "demo-zone-a-1", "demo-zone-b-0"}
    st3 = compute_status(3, ZONES, doc, pods, _statuses(doc, everyone - down), st2, "T2")
    c3 = {c["type"]: c for c in st3["conditions"]}
    assert c3["Ready"]["status"] == "False" and c3["Ready"]["reason"] == "WriteQuorumLost"
    assert st3["vdl"] == 7  # never goes backwards


def test_status_blocked_and_progressing() -> None:
    st = compute_status(1, None, None, [], {}, None, "T", blocked=("ZoneUnavailable", "no nodes"))
    c = {x["type"]: x for x in st["conditions"]}
    assert c["Ready"]["status"] == "False" and c["Ready"]["reason"] == "ZoneUnavailable"
    assert c["Progressing"]["status"] == "False"
    doc = pl.desired_placement("demo", ZONES, spec(), None)
    pods = _pods(doc)
    st = compute_status(1, ZONES, doc, pods, _statuses(doc, {p.name for p in pods}), None, "T",
                        progressing=("Reconciling", "created StatefulSet x"))
    c = {x["type"]: x for x in st["conditions"]}
    assert c["Progressing"]["status"] == "True" and c["Ready"]["status"] == "False"
    # once Ready, progress (a repair, a rollout) does not flip Ready
    ok = compute_status(1, ZONES, doc, pods, _statuses(doc, {p.name for p in pods}), None, "T")
    st = compute_status(2, ZONES, doc, pods, _statuses(doc, {p.name for p in pods}), ok, "T2",
                        progressing=("Repairing", "pg 0: x replacing y"))
    c = {x["type"]: x for x in st["conditions"]}
    assert c["Ready"]["status"] == "True" and c["Progressing"]["reason"] == "Repairing"


def test_healthy_segments_counts_only_members_holding_the_segment() -> None:
    doc = pl.desired_placement("demo", ZONES, spec(), None)
    statuses = _statuses(doc, set(pl.pods_of(doc)))
    statuses["demo-zone-b-1"]["segments"] = []
    assert healthy_segments(doc, statuses) == {0: 5, 1: 5, 2: 5, 3: 5}


def test_topology_from_placement() -> None:
    doc = pl.desired_placement("demo", ZONES, spec(), None)
    ips = {p: f"127.0.0.{i + 1}" for i, p in enumerate(sorted(pl.pods_of(doc)))}
    ips["demo-zone-c-1"] = None
    topo = topology_from_objects(doc, ips, "ns", "demo")
    assert topo.layout.pg_count == 4 and len(topo.memberships) == 4
    assert topo.nodes["demo-zone-a-0"] == "https://127.0.0.1:7000"
    assert topo.nodes["demo-zone-c-1"] == "https://demo-zone-c-1.demo-nodes.ns.svc:7000"


def _sts(gen: int = 1, replicas: int = 2, ready: int = 2, cur: str = "r1", upd: str = "r1") -> dict:
    return {"metadata": {"generation": gen}, "spec": {"replicas": replicas},
            "status": {"observedGeneration": gen, "readyReplicas": ready, "updatedReplicas": ready,
                       "currentRevision": cur, "updateRevision": upd}}


def test_template_changes_roll_one_zone_at_a_time() -> None:
    from tidemark_operator.resources import statefulset_settled, template_rollout_allowed

    assert statefulset_settled(_sts())
    assert not statefulset_settled(_sts(ready=1))
    assert not statefulset_settled(_sts(upd="r2"))
    assert not statefulset_settled(None)
    settled = {"zone-a": _sts(), "zone-b": _sts(), "zone-c": _sts()}
    assert template_rollout_allowed("zone-a", settled, all_segments_healthy=True)
    assert not template_rollout_allowed("zone-a", settled, all_segments_healthy=False)
    rolling_b = {**settled, "zone-b": _sts(upd="r2", ready=1)}
    assert not template_rollout_allowed("zone-a", rolling_b, True)
    assert template_rollout_allowed("zone-b", rolling_b, True)  # its own rollout is fine


def test_template_hash_ignores_replicas() -> None:
    from tidemark_operator.model import TEMPLATE_HASH

    a = statefulset("d", "ns", "z", spec())
    b = statefulset("d", "ns", "z", spec(nodesPerZone=3))
    c = statefulset("d", "ns", "z", spec(resources={"requests": {"cpu": "1"}}))
    assert a["metadata"]["annotations"][TEMPLATE_HASH] == b["metadata"]["annotations"][TEMPLATE_HASH]
    assert a["metadata"]["annotations"][TEMPLATE_HASH] != c["metadata"]["annotations"][TEMPLATE_HASH]


def test_repair_plan_begins_then_finishes_replacements() -> None:
    from tidemark_operator.repairs import parse_duration, parse_quantity, plan_changes
    from tidemark_protocol.repair import RepairLimits

    assert parse_duration("90s") == 90 and parse_duration("1h30m") == 5400
    assert parse_quantity("50Mi") == 50 * 2**20 and parse_quantity(7) == 7
    with pytest.raises(ValueError):
        parse_duration("five minutes")
    doc = pl.desired_placement("demo", ZONES, spec(nodesPerZone=3, volume={"pgCount": 6}), None)
    zone_of = {p: z for z, ps in doc["zones"].items() for p in ps}
    lost = "demo-zone-a-0"
    up = set(zone_of) - {lost}
    statuses = _statuses(doc, up)
    limits = RepairLimits(node_loss_timeout=10, max_concurrent=2)
    # not lost long enough: nothing
    new, changes, _ = plan_changes(doc, zone_of, statuses, {lost: 95.0}, 100.0, limits)
    assert changes == [] and new["pgs"] == doc["pgs"]
    new, changes, waits = plan_changes(doc, zone_of, statuses, {lost: 0.0}, 100.0, limits)
    affected = [int(pg) for pg, m in doc["pgs"].items() if lost in m["members"]]
    assert len(changes) == min(2, len(affected)) and all(c.kind == "begin" for c in changes)
    assert len(waits) == len(affected) - len(changes)  # concurrency limit
    for c in changes:
        m = new["pgs"][str(c.pg)]
        assert m["epoch"] == 2 and lost in m["members"] and c.target in m["next_members"]
        assert zone_of[c.target] == "zone-a" and c.target not in m["members"]
        assert lost not in c.sources
    # a PG with a change in progress finishes once the target's hydration is done
    c = changes[0]
    st2 = _statuses(new, up)
    for seg in st2[c.target]["segments"]:
        seg["hydration"] = {"state": "done" if seg["pg"] == c.pg else "snapshot"}
    if not any(seg["pg"] == c.pg for seg in st2[c.target]["segments"]):
        st2[c.target]["segments"].append({"pg": c.pg, "hydration": {"state": "done"}})
    done, changes2, _ = plan_changes(new, zone_of, st2, {lost: 0.0}, 100.0, limits)
    fin = [x for x in changes2 if x.kind == "finish"]
    assert [x.pg for x in fin] == [c.pg]
    m = done["pgs"][str(c.pg)]
    assert m["epoch"] == 3 and m["next_members"] is None and lost not in m["members"]
    assert c.target in m["members"]


def test_caught_up_segments_need_no_holes_no_hydration_and_small_lag() -> None:
    from tidemark_operator.status import caught_up_segments

    doc = pl.desired_placement("demo", ZONES, spec(), None)
    st = _statuses(doc, set(pl.pods_of(doc)))
    for pod_st in st.values():
        for seg in pod_st["segments"]:
            seg["scl"] = 100_000
    assert caught_up_segments(doc, st) == {0: 6, 1: 6, 2: 6, 3: 6}
    members0 = doc["pgs"]["0"]["members"]
    seg = next(x for x in st[members0[0]]["segments"] if x["pg"] == 0)
    seg["holes"] = True
    seg2 = next(x for x in st[members0[1]]["segments"] if x["pg"] == 0)
    seg2["scl"] = 10
    seg3 = next(x for x in st[members0[2]]["segments"] if x["pg"] == 0)
    seg3["hydration"] = {"state": "log"}
    assert caught_up_segments(doc, st)[0] == 3


# -- backup, snapshots, restore (pure parts) ---------------------------------------------------

def test_backup_target_forms_and_spec() -> None:
    from tidemark_operator.backupspec import BackupSpec, split_target

    assert split_target("s3://bkt/vol/a", "http://m:9000") == ("s3://bkt/vol/a", "http://m:9000")
    assert split_target("https://minio.example:9000/bkt/pre/fix") == ("s3://bkt/pre/fix",
                                                                      "https://minio.example:9000")
    assert split_target("http://m:9000/bkt") == ("s3://bkt", "http://m:9000")
    with pytest.raises(ValueError):
        split_target("http://m:9000/")
    with pytest.raises(ValueError):
        split_target("ftp://x/y")
    off = BackupSpec.from_spec({"backup": {"target": "s3://b/p", "credentialsSecret": "s"}})
    assert not off.enabled and off.store is None  # enabled defaults to false
    on = BackupSpec.from_spec({"backup": {"enabled": True, "target": "s3://b/p", "endpoint": "http://e:1",
                                          "credentialsSecret": "s", "retentionDays": 5}})
    assert on.enabled and on.store.url == "s3://b/p" and on.store.endpoint == "http://e:1"
    assert on.retention_days == 5 and on.store.credentials_secret == "s"


def test_statefulset_gets_backup_target_endpoint_and_secret_refs() -> None:
    from tidemark_operator.backupspec import BackupSpec

    b = BackupSpec.from_spec({"backup": {"enabled": True, "target": "s3://b/p", "endpoint": "http://e:1",
                                         "credentialsSecret": "creds", "retentionDays": 3}})
    plain = statefulset("demo", "ns", "zone-a", spec(), OWNER)
    sts = statefulset("demo", "ns", "zone-a", spec(), OWNER, backup=b)
    c = sts["spec"]["template"]["spec"]["containers"][0]
    assert c["command"][-4:] == ["--backup", "s3://b/p", "--backup-retention-days", "3"]
    env = {e["name"]: e for e in c["env"]}
    assert env["TIDEMARK_S3_ENDPOINT"]["value"] == "http://e:1"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "creds", "key": key}
        assert "value" not in env[key]  # the keys never land in the pod spec
    # enabling backup is a template change (rolled one zone at a time like any other)
    assert sts["metadata"]["annotations"]["tidemark.dev/template-hash"] != \
        plain["metadata"]["annotations"]["tidemark.dev/template-hash"]
    assert statefulset("demo", "ns", "zone-a", spec(), OWNER, backup=BackupSpec(False, None)) == plain


def test_restore_spec_and_same_store() -> None:
    from tidemark_operator.backupspec import RestoreSpec, StoreRef, same_store

    assert RestoreSpec.from_spec({}) is None
    r = RestoreSpec.from_spec({"restore": {"source": {"cluster": "src"}, "pointInTime": "2026-11-22T20:00:00Z"}})
    assert r.source_cluster == "src" and r.store is None and r.point_in_time == "2026-11-22T20:00:00Z"
    r2 = RestoreSpec.from_spec({"restore": {"source": {"target": "http://m:9/b/p", "credentialsSecret": "c"}}})
    assert r2.store == StoreRef("s3://b/p", "http://m:9", "c") and r2.point_in_time is None
    assert same_store(StoreRef("s3://b/p/"), StoreRef("s3://b/p"))
    assert not same_store(StoreRef("s3://b/p"), StoreRef("s3://b/q"))
    assert not same_store(StoreRef("s3://b/p"), None)


def _ready_status() -> dict:
    doc = pl.desired_placement("demo", ZONES, spec(), None)
    pods = [PodObs(p, z, f"127.0.0.{i + 2}", True)
            for i, (z, ps) in enumerate(sorted(doc["zones"].items())) for p in ps]
    return compute_status(1, ZONES, doc, pods, _statuses(doc, set(pl.pods_of(doc))), None, "t0")


def test_restore_overlay_never_ready_before_done() -> None:
    from tidemark_operator.status import apply_restore_status

    base = _ready_status()
    assert next(c for c in base["conditions"] if c["type"] == "Ready")["status"] == "True"
    for phase, ready_reason in [("Validating", "Restoring"), ("Loading", "Restoring"),
                                ("Failed", "RestoreFailed")]:
        st = apply_restore_status(dict(base), {"phase": phase, "message": "m"}, 1, [], "t1")
        conds = {c["type"]: c for c in st["conditions"]}
        assert conds["Ready"]["status"] == "False" and conds["Ready"]["reason"] == ready_reason
        assert conds["Restored"]["status"] == "False"
        assert st["phase"] == ("Failed" if phase == "Failed" else "Restoring")
        assert st["restore"]["phase"] == phase
    done = apply_restore_status(dict(base), {"phase": "Done", "lsn": 7, "pages": 3,
                                             "pointInTime": "T"}, 1, [], "t1")
    conds = {c["type"]: c for c in done["conditions"]}
    assert conds["Ready"]["status"] == "True" and conds["Restored"]["status"] == "True"
    assert conds["Restored"]["reason"] == "RestoreComplete" and "LSN 7" in conds["Restored"]["message"]


def test_restore_status_from_job_marks_load_started_until_done() -> None:
    from tidemark_operator.backupspec import RestoreSpec
    from tidemark_operator.restoreflow import restore_status
    from tidemark_operator.restorejobs import RestoreJob

    r = RestoreSpec.from_spec({"restore": {"source": {"cluster": "src"}}})
    seen: list[tuple[str, str]] = []

    def ev(t: str, reason: str, _m: str) -> None:
        seen.append((t, reason))

    job = RestoreJob(state="loading", lsn=42, t_us=1_700_000_000_000_000, progress="loading pages: 1/9")
    rs = restore_status(job, {}, r, ev)
    assert rs["phase"] == "Loading" and rs["loadStarted"] is True and rs["lsn"] == 42
    assert rs["progress"] == "loading pages: 1/9" and rs["source"] == "src"
    job.fail("load", "boom")
    rs = restore_status(job, {"restore": rs}, r, ev)
    assert rs["phase"] == "Failed" and rs["loadStarted"] is True and job.needs_wipe
    assert ("Warning", "RestoreFailed") in seen
    job.state, job.result = "done", {"pages": 9, "new_vdl": 99, "total_s": 1.5}
    rs = restore_status(job, {"restore": rs}, r, ev)
    assert rs["phase"] == "Done" and rs["loadStarted"] is False and rs["pages"] == 9
    assert ("Normal", "Restored") in seen
    # once Done is persisted the record is kept as is (no job needed after a restart)
    assert restore_status(None, {"restore": rs}, r, ev) == rs
    # a validation failure does not mark a load
    v = RestoreJob()
    v.fail("validate", "outside the window")
    assert restore_status(v, {}, r, ev)["loadStarted"] is False and not v.needs_wipe


def test_backup_block_prefers_store_errors_and_keeps_metrics_keys() -> None:
    from tidemark_operator.backup_poll import STATUS_KEYS, backup_block

    out = {k: 1 for k in STATUS_KEYS} | {"lastError": None}
    b = backup_block(out, None, "s3://b/p", "now")
    assert b["lastError"] is None and b["VolumeBytesUsed"] == 1 and b["target"] == "s3://b/p"
    assert backup_block(out, "EndpointConnectionError", "s3://b/p", "now")["lastError"] == \
        "EndpointConnectionError"
    empty = backup_block(None, "down", "s3://b/p", "now")
    assert set(STATUS_KEYS) <= set(empty) and empty["firstRecoverableTime"] is None


def test_restore_retry_delay_doubles_and_is_capped() -> None:
    from tidemark_operator import restorejobs
    from tidemark_operator.restoreflow import retry_delay

    base = restorejobs.RETRY_DELAY
    assert retry_delay(1) == base and retry_delay(2) == 2 * base and retry_delay(3) == 4 * base
    assert retry_delay(50) == 600.0


def test_repair_aborts_when_its_target_is_lost_and_starts_over_elsewhere() -> None:
    from tidemark_operator.repairs import plan_changes
    from tidemark_protocol.repair import RepairLimits

    doc = pl.desired_placement("demo", ZONES, spec(nodesPerZone=4, volume={"pgCount": 6}), None)
    zone_of = {p: z for z, ps in doc["zones"].items() for p in ps}
    lost = "demo-zone-a-0"
    limits = RepairLimits(node_loss_timeout=10, max_concurrent=1)
    up = set(zone_of) - {lost}
    new, changes, _ = plan_changes(doc, zone_of, _statuses(doc, up), {lost: 0.0}, 100.0, limits)
    (begin,) = changes
    pg, target = begin.pg, begin.target
    dual = new["pgs"][str(pg)]
    # the target dies mid-rebuild: not yet lost long enough -> the change waits
    up2 = up - {target}
    since = {lost: 0.0, target: 95.0}
    same, changes, _ = plan_changes(new, zone_of, _statuses(new, up2), since, 100.0, limits)
    assert changes == [] and same["pgs"][str(pg)] == dual
    # lost for nodeLossTimeout: back to the old set, and the replacement starts over on
    # another pod of the zone (one placement write, epochs only move forward)
    since[target] = 80.0
    after, changes, _ = plan_changes(new, zone_of, _statuses(new, up2), since, 100.0, limits)
    kinds = [(c.kind, c.pg) for c in changes]
    assert ("abort", pg) in kinds, kinds
    m = after["pgs"][str(pg)]
    assert target not in m["members"] and target not in (m["next_members"] or [])
    assert m["epoch"] > dual["epoch"]
    restart = [c for c in changes if c.kind == "begin" and c.pg == pg]
    assert restart and restart[0].target not in (lost, target) and zone_of[restart[0].target] == "zone-a"


# -- the CRD schema and the pydantic spec model agree ------------------------------------------

_CRD_FILES = [ROOT / "crds" / "auroraclusters.tidemark.dev.yaml",
              ROOT / "charts" / "tidemark" / "files" / "crds" / "auroraclusters.tidemark.dev.yaml"]
_CHECKED = ("enum", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "pattern",
            "default")


def _crd_facts(node: dict) -> dict:
    """What the model must match in a CRD schema node (descriptions, formats and CEL
    rules are the apiserver's alone)."""
    out = {"type": "int-or-string" if node.get("x-kubernetes-int-or-string") else node["type"]}
    out.update({k: node[k] for k in _CHECKED if k in node})
    if "properties" in node:
        out["properties"] = {k: _crd_facts(v) for k, v in node["properties"].items()}
        out["required"] = sorted(node.get("required", []))
    if "additionalProperties" in node:
        out["additionalProperties"] = _crd_facts(node["additionalProperties"])
    if "items" in node:
        out["items"] = _crd_facts(node["items"])
    return out


def _model_facts(cls: type) -> dict:
    props, required = {}, []
    for name, f in cls.model_fields.items():
        key = f.alias or name
        facts = _type_facts(f.annotation, tuple(f.metadata))
        if f.default_factory is not None:
            value = f.default_factory()
            assert isinstance(value, BaseModel) and value == type(value)(), (key, value)
            facts["default"] = {}  # the apiserver's `default: {}` then fills nested defaults
        elif f.is_required():
            required.append(key)
        elif f.default is not None:
            facts["default"] = list(f.default) if isinstance(f.default, tuple) else f.default
        props[key] = facts
    return {"type": "object", "properties": props, "required": sorted(required)}


def _constraints(metadata: tuple, array: bool) -> dict:
    out: dict = {}
    lo, hi = ("minItems", "maxItems") if array else ("minLength", "maxLength")
    for m in metadata:
        if isinstance(m, FieldInfo):  # Field(...) inside Annotated[...]
            out.update(_constraints(tuple(m.metadata), array))
        elif isinstance(m, StringConstraints):
            out.update({k: v for k, v in (("pattern", m.pattern), (lo, m.min_length), (hi, m.max_length))
                        if v is not None})
        elif isinstance(m, annotated_types.Ge):
            out["minimum"] = m.ge
        elif isinstance(m, annotated_types.Le):
            out["maximum"] = m.le
        elif isinstance(m, annotated_types.MinLen):
            out[lo] = m.min_length
        elif isinstance(m, annotated_types.MaxLen):
            out[hi] = m.max_length
        else:
            raise AssertionError(f"constraint {m!r} has no check against the CRD")
    return out


def _type_facts(tp: object, metadata: tuple = ()) -> dict:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _type_facts(args[0], (*metadata, *tp.__metadata__))
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _type_facts(options[0], metadata)
        branches = [_type_facts(a) for a in options]
        assert sorted(b["type"] for b in branches) == ["integer", "string"], tp
        out = {"type": "int-or-string", **_constraints(metadata, False)}
        out.update({k: v for b in branches for k, v in b.items() if k != "type"})
        return out
    if origin is typing.Literal:
        return {"type": _JSON_TYPES[type(args[0])], "enum": list(args), **_constraints(metadata, False)}
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return _model_facts(tp)
    if origin in (tuple, list):
        return {"type": "array", "items": _type_facts(args[0]), **_constraints(metadata, True)}
    if origin is dict and args[1] is typing.Any:  # free-form (x-kubernetes-preserve-unknown-fields)
        return {"type": "object"}
    if origin is dict:
        return {"type": "object", "additionalProperties": _type_facts(args[1])}
    return {"type": _JSON_TYPES[tp], **_constraints(metadata, False)}


_JSON_TYPES = {bool: "boolean", int: "integer", str: "string"}


@pytest.mark.parametrize("path", _CRD_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_crd_schema_matches_the_spec_model(path) -> None:
    """One source of truth for the AuroraCluster spec: the CRD (and the chart's copy) has
    exactly the model's fields, defaults, types, enums and bounds."""
    crd = yaml.safe_load(path.read_text())
    (version,) = crd["spec"]["versions"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    want = _model_facts(ClusterSpec)
    got = _crd_facts(spec)
    assert got.pop("default") == {}  # spec itself defaults to {} (every field optional)
    assert got == want


def test_spec_model_refuses_what_the_crd_refuses() -> None:
    from pydantic import ValidationError

    for bad in ({"nodesPerZone": 1}, {"segmentsPerZone": 3}, {"zones": ["a", "b"]},
                {"repair": {"rebuildBandwidth": "50MB"}}, {"repair": {"nodeLossTimeout": "5 min"}},
                {"imagePullPolicy": "Sometimes"}, {"backup": {"retentionDays": 40}},
                {"restore": {"pointInTime": "2026-01-01T00:00:00Z"}}):
        with pytest.raises(ValidationError):
            parse_spec(bad)
    s = parse_spec({"repair": {"rebuildBandwidth": "128Ki"}, "storage": {"size": 1 << 30},
                    "resources": {"requests": {"cpu": "100m", "memory": 256}}})
    assert s.repair.rebuild_bandwidth == "128Ki" and s.storage.size == 1 << 30
    assert s.container_resources() == {"requests": {"cpu": "100m", "memory": 256}}


def test_quantities_are_kubernetes_quantities() -> None:
    from tidemark_operator.repairs import parse_quantity

    assert parse_quantity("128Ki") == 128 * 1024 and parse_quantity("50Mi") == 50 * 2**20
    assert parse_quantity("2G") == 2 * 10**9 and parse_quantity("1500") == 1500
    assert parse_quantity("1.5Mi") == 1_572_864 and parse_quantity(7) == 7
    for junk in ("50MB", "fast", ""):
        with pytest.raises(ValueError, match="bad quantity .*Kubernetes quantity"):
            parse_quantity(junk)


class _FakeKube:
    """The two placement calls the repair executor makes, on a dict."""

    def __init__(self, cm: dict) -> None:
        self.cm, self.writes = cm, 0

    def read(self, kind: str, name: str, ns: str) -> dict:
        assert kind == "ConfigMap"
        return self.cm

    def replace_config_map(self, obj: dict) -> None:
        if obj["metadata"]["resourceVersion"] != self.cm["metadata"]["resourceVersion"]:
            raise pl.Conflict("rv mismatch")
        self.writes += 1
        self.cm = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.writes + 1)}}


@pytest.mark.parametrize("policy, owned", [("Retain", False), (None, False), ("Delete", True)])
def test_placement_outlives_a_retained_cluster_with_its_pvcs(policy: str | None, owned: bool) -> None:
    """Retain keeps the PVCs; their segments belong to this placement, so it stays too
    (a cluster applied again under the name adopts both instead of a new placement over
    old segments). Delete: the placement goes with the cluster."""
    from tidemark_operator.placement_store import swap

    doc = pl.desired_placement("demo", ZONES, spec(), None)
    kube = _FakeKube(pl.configmap("demo", "ns", doc, resource_version="1"))
    body = {"apiVersion": "tidemark.dev/v1alpha1", "kind": "AuroraCluster",
            "metadata": {"name": "demo", "namespace": "ns", "uid": "u-2"},
            "spec": {} if policy is None else {"deletionPolicy": policy}}
    swap(kube, body, lambda cur: {**cur, "touched": True})
    assert kube.writes == 1
    assert bool(kube.cm["metadata"].get("ownerReferences")) is owned
    assert kube.cm["metadata"]["labels"]["tidemark.dev/cluster"] == "demo"  # `delete pvc,cm -l` finds it


def test_repair_executor_announces_its_steps_to_observers_only() -> None:
    from tidemark_operator import steps
    from tidemark_operator.repair_executor import run_repairs
    from tidemark_operator.state import ClusterState

    assert steps.on_step == []  # production: nobody watches
    s = spec(nodesPerZone=3, repair={"nodeLossTimeout": "10s"})
    doc = pl.desired_placement("demo", ZONES, s, None)
    body = {"apiVersion": "tidemark.dev/v1alpha1", "kind": "AuroraCluster",
            "metadata": {"name": "demo", "namespace": "ns", "uid": "u-1"}, "spec": {"deletionPolicy": "Delete"}}
    cm = pl.configmap("demo", "ns", doc, resource_version="1")
    kube = _FakeKube(cm)
    seen: list[str] = []
    events: list[tuple[str, str]] = []
    steps.on_step.append(seen.append)
    try:
        lost = "demo-zone-a-0"
        statuses = _statuses(doc, {p for ps in doc["zones"].values() for p in ps} - {lost})
        state = ClusterState(unhealthy_since={lost: time.monotonic() - 60})
        new, progress = run_repairs(kube, state, body, s, doc, statuses,
                                    lambda t, r, m: events.append((t, r)))
    finally:
        steps.on_step.remove(seen.append)
    assert seen == [steps.AFTER_REPAIR_BEGIN] and kube.writes == 1
    assert ("Warning", "RepairStarted") in events and progress
    assert kube.cm["metadata"]["ownerReferences"][0]["uid"] == "u-1"  # kopf.adopt
    dual = [int(pg) for pg, m in new["pgs"].items() if m["next_members"]]
    assert dual and all(state.known_repairs[pg] == new["pgs"][str(pg)]["epoch"] for pg in dual)


# -- database instances (issue #12) --------------------------------------------------------------

def test_instance_objects_deployments_services_and_account() -> None:
    from tidemark_operator.instance_resources import app_secret, instance_objects

    s = spec(instances=3).model_copy(update={"image": "img:1"})
    objs = {(o["kind"], o["metadata"]["name"]): o for o in instance_objects("demo", "ns", s, OWNER, ("/v/tidemark",))}
    writer, replica = objs[("Deployment", "demo-writer")], objs[("Deployment", "demo-replica")]
    assert writer["spec"]["replicas"] == 1 and replica["spec"]["replicas"] == 2
    assert writer["spec"]["strategy"] == {"type": "Recreate"}  # a rollout never runs two writers
    c = writer["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "img:1"
    assert c["command"][:8] == ["/v/tidemark", "sql", "serve", "--from-cluster", "demo", "--namespace",
                                "$(POD_NAMESPACE)", "--role"] and "writer" in c["command"]
    assert "--credentials-dir" in c["command"] and not any("password" in a for a in c["command"])
    vol = writer["spec"]["template"]["spec"]["volumes"][0]["secret"]
    assert vol["secretName"] == "demo-app" and vol["defaultMode"] == 0o400
    assert writer["spec"]["template"]["spec"]["topologySpreadConstraints"][0]["topologyKey"] == ZONE_LABEL
    sel = {k: o["spec"]["selector"] for (kind, k), o in objs.items() if kind == "Service"}
    assert sel["demo-rw"]["tidemark.dev/role"] == "writer" and sel["demo-ro"]["tidemark.dev/role"] == "replica"
    assert "tidemark.dev/role" not in sel["demo-r"]
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == "u-1" for o in objs.values())
    rules = objs[("Role", "demo-instance")]["rules"]
    assert not any("secrets" in r["resources"] for r in rules)
    named = parse_spec({"instance": {"credentialsSecret": "mine"}}).model_copy(update={"image": "i"})
    objs = instance_objects("demo", "ns", named)
    dep = next(o for o in objs if o["kind"] == "Deployment")
    assert dep["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"] == "mine"
    assert parse_spec({}).instances == 2 and parse_spec({"instances": 0}).instances == 0
    sec = app_secret("demo", "ns", "pw-123", OWNER)
    assert sec["type"] == "kubernetes.io/basic-auth" and set(sec["data"]) == {"username", "password", "uri", "pgpass"}


def test_instances_status_counts_the_lease_holder_and_lag() -> None:
    from tidemark_operator.instances import InstancePod, instances_status

    s = spec(instances=3, instance={"maxLagMs": 1000})
    pods = [InstancePod("w-1", "writer", "127.0.0.5", True), InstancePod("r-1", "replica", "127.0.0.6", True),
            InstancePod("r-2", "replica", "127.0.0.7", True)]
    seen = {"w-1": {"serving": True, "lag_ms": 0, "volume_epoch": 4}, "r-1": {"serving": True, "lag_ms": 12},
            "r-2": {"serving": True, "lag_ms": 5000}}
    st = instances_status(s, pods, seen, "w-1", None)
    assert st["readyInstances"] == "2/3" and st["currentPrimary"] == "w-1"
    assert [i["serving"] for i in st["instances"]] == [True, True, False]
    assert instances_status(s, pods, seen, "someone-else", None)["readyInstances"] == "1/3"


def test_a_forbidden_eviction_is_an_event_not_a_failed_pass() -> None:
    """Found on kind: the chart's role lacked pods/delete, the 403 failed every observe
    pass (status stopped moving) and the writer's failover waited 5 min for the taint
    eviction. The chart grants it now; without it the pass goes on and says why."""
    from kubernetes.client.exceptions import ApiException

    from tidemark_operator.instances import InstancePod, evict_from_lost_nodes

    class Forbidding:
        def lost_nodes(self) -> set[str]:
            return {"w6"}

        def force_delete_pod(self, name: str, ns: str) -> None:
            raise ApiException(status=403, reason="Forbidden")

    events: list[tuple[str, str, str]] = []
    pods = [InstancePod("db-writer-x", "writer", "10.0.0.1", True, node="w6")]
    gone = evict_from_lost_nodes(Forbidding(), "ns", pods, lambda t, r, m: events.append((t, r, m)))  # type: ignore[arg-type]
    assert gone == [] and events and events[0][1] == "PermissionDenied" and "pods/delete" in events[0][2]


def test_a_writer_whose_lease_lapsed_and_that_does_not_answer_is_replaced_at_once() -> None:
    """On kind the writer's worker died and the failover waited ~40 s for NotReady; the
    Lease (10 s) says it sooner. A writer that still answers, or renewed within the
    duration plus grace, is left alone."""
    import datetime as dt

    from tidemark_operator.instances import InstancePod, evict_expired_writer

    renewed = dt.datetime(2026, 12, 1, 12, 0, 0, tzinfo=dt.UTC)

    class Leases:
        deleted: list[str] = []

        def read(self, kind: str, name: str, ns: str) -> dict:
            assert (kind, name) == ("Lease", "db-writer")
            return {"spec": {"holderIdentity": "db-writer-1", "leaseDurationSeconds": 10,
                             "renewTime": renewed.isoformat()}}

        def force_delete_pod(self, name: str, ns: str) -> None:
            self.deleted.append(name)

    pods = [InstancePod("db-writer-1", "writer", "10.0.0.1", True, node="w6"),
            InstancePod("db-replica-1", "replica", "10.0.0.2", True, node="w2")]
    events: list[tuple[str, str, str]] = []
    kube, t = Leases(), renewed.timestamp()
    ev = lambda a, b, c: events.append((a, b, c))  # noqa: E731
    assert evict_expired_writer(kube, "db", "ns", pods, {}, ev, t + 14) == []  # within 10 + 5 s
    assert evict_expired_writer(kube, "db", "ns", pods, {"db-writer-1": {"serving": False}}, ev, t + 60) == []
    assert evict_expired_writer(kube, "db", "ns", pods, {"db-writer-1": None}, ev, t + 16) == ["db-writer-1"]
    assert kube.deleted == ["db-writer-1"] and events[0][1] == "WriterLeaseExpired"


# -- maintenance mode (issue #15: `kubectl tidemark maintenance on|off`) --------------------------

def test_maintenance_pauses_new_rebuilds_but_lets_running_ones_finish() -> None:
    from tidemark_operator.repairs import PAUSED, plan_changes
    from tidemark_protocol.repair import RepairLimits

    doc = pl.desired_placement("demo", ZONES, spec(nodesPerZone=3, volume={"pgCount": 6}), None)
    zone_of = {p: z for z, ps in doc["zones"].items() for p in ps}
    lost = "demo-zone-a-0"
    up = set(zone_of) - {lost}
    limits = RepairLimits(node_loss_timeout=10, max_concurrent=2)
    same, changes, waits = plan_changes(doc, zone_of, _statuses(doc, up), {lost: 0.0}, 100.0, limits, True)
    assert changes == [] and same["pgs"] == doc["pgs"]
    assert waits and all(PAUSED in w for w in waits)
    # the same plan without maintenance begins, and a begun one finishes under maintenance
    begun, changes, _ = plan_changes(doc, zone_of, _statuses(doc, up), {lost: 0.0}, 100.0, limits)
    c = changes[0]
    st = _statuses(begun, up)
    st[c.target]["segments"].append({"pg": c.pg, "hydration": {"state": "done"}})
    _, fin, _ = plan_changes(begun, zone_of, st, {lost: 0.0}, 100.0, limits, True)
    assert [(x.kind, x.pg) for x in fin] == [("finish", c.pg)]


def test_repair_executor_starts_nothing_while_the_maintenance_annotation_is_set() -> None:
    from tidemark_operator.model import MAINTENANCE_ANNOTATION
    from tidemark_operator.repair_executor import run_repairs
    from tidemark_operator.state import ClusterState

    s = spec(nodesPerZone=3, repair={"nodeLossTimeout": "10s"})
    doc = pl.desired_placement("demo", ZONES, s, None)
    kube = _FakeKube(pl.configmap("demo", "ns", doc, resource_version="1"))
    body = {"apiVersion": "tidemark.dev/v1alpha1", "kind": "AuroraCluster",
            "metadata": {"name": "demo", "namespace": "ns", "uid": "u-1",
                         "annotations": {MAINTENANCE_ANNOTATION: "true"}}, "spec": {}}
    lost = "demo-zone-a-0"
    statuses = _statuses(doc, set(pl.pods_of(doc)) - {lost})
    state = ClusterState(unhealthy_since={lost: time.monotonic() - 60})
    events: list[str] = []
    new, progress = run_repairs(kube, state, body, s, doc, statuses, lambda t, r, m: events.append(r))
    assert kube.writes == 0 and new["pgs"] == doc["pgs"] and events == []
    assert progress and all("maintenance" in p for p in progress)


def test_maintenance_condition_and_events_on_each_flip() -> None:
    from tidemark_operator import maintenance
    from tidemark_operator.model import MAINTENANCE_ANNOTATION

    assert maintenance.active({"metadata": {"annotations": {MAINTENANCE_ANNOTATION: "True"}}})
    assert not maintenance.active({"metadata": {"annotations": {MAINTENANCE_ANNOTATION: "false"}}})
    assert not maintenance.active({"metadata": {}})
    events: list[tuple[str, str]] = []

    def step(on: bool, old: list) -> list:
        st: dict = {"conditions": [{"type": "Ready", "status": "True"}]}
        maintenance.apply(st, on, 1, old, "T", lambda t, r, m: events.append((t, r)))
        return st["conditions"]

    off = step(False, [])
    assert events == []  # a cluster never in maintenance says nothing
    assert next(c for c in off if c["type"] == "Maintenance")["status"] == "False"
    on = step(True, off)
    assert events == [("Warning", "MaintenanceOn")]
    c = next(c for c in on if c["type"] == "Maintenance")
    assert c["status"] == "True" and c["reason"] == "MaintenanceOn" and c["lastTransitionTime"] == "T"
    step(True, on)
    assert len(events) == 1  # no event while it stays on
    step(False, on)
    assert events[-1] == ("Normal", "MaintenanceOff")


def test_status_lists_repairs_in_flight_with_the_targets_progress() -> None:
    from tidemark_operator.status import repairs_in_flight

    doc = pl.desired_placement("demo", ZONES, spec(nodesPerZone=3), None)
    pods = set(pl.pods_of(doc))
    assert repairs_in_flight(doc, _statuses(doc, pods)) == []
    m = pl.memberships(doc)[0]
    lost = m.members[0]
    target = next(p for p in sorted(pods) if p.rsplit("-", 1)[0] == lost.rsplit("-", 1)[0] and p not in m.members)
    doc["pgs"]["0"] = m.begin_replace(lost, target).to_json()
    st = _statuses(doc, pods - {lost})
    st[target]["segments"].append({"pg": 0, "hydration": {"state": "snapshot", "pct": 42.5, "bytes": 85,
                                                          "total_bytes": 200}})
    (r,) = repairs_in_flight(doc, st)
    assert r == {"pg": 0, "from": lost, "to": target, "epoch": m.epoch + 1, "state": "snapshot",
                 "pct": 42.5, "bytes": 85, "totalBytes": 200}
    full = compute_status(1, ZONES, doc, _pods(doc), st, None, "T")
    assert full["repairs"] == [r]


def test_status_names_the_pods_that_do_not_answer() -> None:
    doc = pl.desired_placement("demo", ZONES, spec(), None)
    pods = set(pl.pods_of(doc))
    assert "nodesDown" not in compute_status(1, ZONES, doc, _pods(doc), _statuses(doc, pods), None, "T")
    st = compute_status(1, ZONES, doc, _pods(doc), _statuses(doc, pods - {"demo-zone-b-1"}), None, "T")
    assert st["nodesDown"] == ["demo-zone-b-1"] and st["phase"] == "Degraded"

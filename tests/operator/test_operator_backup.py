"""Backup, snapshots and point-in-time restore through the operator, on the rig with the
rig's real MinIO: an AuroraCluster streaming to MinIO reports its recoverable window and
storage metrics in status; an AuroraSnapshot becomes Ready and its objects go with it; a
restore AuroraCluster at a T inside the window comes up Ready holding exactly the commits
acknowledged at or before T (checked slot by slot against the workload's model); a T
outside the window fails with a clear condition and builds nothing.

The tests share one operator, one source cluster and one workload (module scope) and run
in file order."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from rigenv import CRD, ROOT, cluster_body, cond, get_ac, operator_env, ready

from tidemark_backup.catalog import Timeline
from tidemark_backup.objstore import S3Store
from tidemark_compute.verify_model import SLOT, Model, parse_slot
from tidemark_compute.workload import read_all_pages, run_workload
from tidemark_compute.writer import Writer
from tidemark_operator.backupspec import SNAPSHOT_PLURAL
from tidemark_operator.model import GROUP, PLURAL, VERSION
from tidemark_operator.topology import cluster_topology
from tidemark_restore.inventory import iso, parse_time
from tidemark_rig.control_plane import ControlPlane
from tidemark_rig.minio import MinioServer
from tidemark_rig.procs import wait_for

pytestmark = [pytest.mark.rig, pytest.mark.operator, pytest.mark.backup, pytest.mark.timeout(600)]

SNAP_CRD = ROOT / "crds" / "aurorasnapshots.tidemark.dev.yaml"
SRC, RESTORED, SECRET = "src", "restored", "backup-creds"


@pytest.fixture(scope="module")
def env(rig_cluster: ControlPlane, rig_minio_server: MinioServer,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    minio = rig_minio_server.make_bucket("op-" + uuid.uuid4().hex[:12])
    # The operator process inherits these: a fast backup poll and restore retry.
    saved = {k: os.environ.get(k) for k in ("TIDEMARK_OPERATOR_BACKUP_POLL", "TIDEMARK_OPERATOR_RESTORE_RETRY")}
    os.environ.update({"TIDEMARK_OPERATOR_BACKUP_POLL": "2", "TIDEMARK_OPERATOR_RESTORE_RETRY": "5"})
    try:
        with operator_env(rig_cluster, tmp_path_factory, crds=(CRD, SNAP_CRD)) as e:
            e["core"].create_namespaced_secret(e["ns"], {
                "metadata": {"name": SECRET},
                "data": {"AWS_ACCESS_KEY_ID": base64.b64encode(minio.access_key.encode()).decode(),
                         "AWS_SECRET_ACCESS_KEY": base64.b64encode(minio.secret_key.encode()).decode()}},
                _request_timeout=10)
            e["minio"] = minio
            e["store"] = S3Store(f"s3://{minio.bucket}/src", minio.bucket, "/src", minio.endpoint,
                                 minio.access_key, minio.secret_key)
            yield e
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def backup_spec(e: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {"enabled": True, "target": f"s3://{e['minio'].bucket}/{prefix}",
            "endpoint": e["minio"].endpoint, "credentialsSecret": SECRET, "retentionDays": 1}


def create(e: dict[str, Any], body: dict[str, Any], plural: str = PLURAL) -> None:
    e["co"].create_namespaced_custom_object(GROUP, VERSION, e["ns"], plural, body, _request_timeout=10)


def events(e: dict[str, Any], name: str) -> list[Any]:
    return e["core"].list_namespaced_event(e["ns"], field_selector=f"involvedObject.name={name}",
                                           _request_timeout=5).items


def wait_events(e: dict[str, Any], name: str, want: set[str], timeout: float = 30) -> set[str]:
    """kopf posts events asynchronously: wait (bounded) until WANT are all there."""
    got: set[str] = set()

    def have() -> bool:
        got.clear()
        got.update(ev.reason for ev in events(e, name))
        return want <= got

    try:
        wait_for(have, timeout, f"events {sorted(want)} on {name}", interval=0.5)
    finally:
        print(f"events on {name}:", sorted(got))
    return got


def check_pages(pages: dict[int, bytes], model: Model, marks: list[tuple[int, int]], t_us: int) -> dict:
    """Every slot holds the newest write with CPL <= L = VDL at T (or nothing), and every
    commit the client saw acknowledged at or before T has CPL <= L (as tests/backup)."""
    lsn = Timeline(marks).lsn_at(t_us) or 0
    zero = bytes(4096)
    for (page, slot), writers in model.writes.items():
        holder = parse_slot(pages.get(page, zero)[slot * SLOT:(slot + 1) * SLOT], page, slot)
        committed = [model.mtrs[w] for w in writers if model.mtrs[w].cpl <= lsn]
        expect = max(committed, key=lambda m: m.cpl).mtr if committed else None
        assert holder == expect, f"slot ({page},{slot}) holds {holder}, expected {expect} (L={lsn})"
    for m in model.mtrs.values():
        if m.acked and m.commit_time * 1e6 <= t_us:
            assert m.cpl <= lsn, f"mtr {m.mtr} acked at {m.commit_time} <= T but cpl {m.cpl} > L {lsn}"
    return {"lsn": lsn, "present": sum(1 for m in model.mtrs.values() if m.acked and m.cpl <= lsn),
            "acked": sum(1 for m in model.mtrs.values() if m.acked)}


async def _workload(e: dict[str, Any], seconds: float, name: str = SRC) -> tuple[Model, list[tuple[int, int]]]:
    writer = await Writer.open(cluster_topology(e["core"], e["ns"], name), timeout=60)
    model = Model(None)
    try:
        stats = await run_workload(writer, model, seconds, concurrency=8, seed=7)
        assert stats.failed == 0 and stats.acked > 10, stats
        marks = writer.marks_since(0)[0]
    finally:
        await writer.close()
    return model, marks


async def _read(e: dict[str, Any], name: str, pages: list[int]) -> dict[int, bytes]:
    writer = await Writer.open(cluster_topology(e["core"], e["ns"], name), timeout=60)
    try:
        return await read_all_pages(writer, pages, timeout=60)
    finally:
        await writer.close()


# -- tests, in order -------------------------------------------------------------------------

@pytest.mark.parametrize(("plural", "body", "needle"), [
    (PLURAL, {"restore": {"source": {"cluster": "a", "target": "s3://b/p"}}},
     "restore.source needs exactly one of cluster or target"),
    (PLURAL, {"restore": {"source": {}}}, "restore.source needs exactly one of cluster or target"),
    (PLURAL, {"restore": {"source": {"target": "ftp://x"}}}, "restore.source.target must be"),
    (PLURAL, {"restore": {"source": {"cluster": "a"}, "pointInTime": "yesterday"}}, "pointInTime"),
    (PLURAL, {"backup": {"target": "s3://b/p", "endpoint": "minio:9000"}}, "backup.endpoint must be"),
    (SNAPSHOT_PLURAL, None, "cluster"),
])
def test_schema_refuses_invalid_backup_restore_and_snapshot(env: dict[str, Any], plural: str,
                                                            body: dict[str, Any] | None, needle: str) -> None:
    obj = (cluster_body("bad", **body) if plural == PLURAL else
           {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AuroraSnapshot", "metadata": {"name": "bad"},
            "spec": {"pointInTime": "2026-01-01T00:00:00Z"}})
    with pytest.raises(ApiException) as info:
        create(env, obj, plural)
    assert info.value.status == 422
    assert needle in info.value.body, info.value.body


def test_backed_up_cluster_reports_recoverability(env: dict[str, Any]) -> None:
    create(env, cluster_body(SRC, backup=backup_spec(env, "src")))
    wait_for(lambda: ready(env, SRC), 120, "source cluster Ready", interval=0.5)
    sts = env["apps"].read_namespaced_stateful_set(f"{SRC}-zone-a", env["ns"], _request_timeout=5)
    c = sts.spec.template.spec.containers[0]
    assert "--backup" in c.command and f"s3://{env['minio'].bucket}/src" in c.command
    keys = {v.name: v.value_from.secret_key_ref.name for v in c.env if v.value_from and v.value_from.secret_key_ref}
    assert keys == {"AWS_ACCESS_KEY_ID": SECRET, "AWS_SECRET_ACCESS_KEY": SECRET}

    t0 = time.time()
    model, marks = asyncio.run(_workload(env, 6))
    env["model"], env["marks"] = model, marks
    end = iso(marks[-1][1])

    def caught_up() -> dict[str, Any] | None:
        b = (get_ac(env, SRC).get("status") or {}).get("backup") or {}
        return b if (b.get("latestRestorableTime") or "") >= end else None

    b = wait_for(caught_up, 90, "status.backup.latestRestorableTime past the workload", interval=1)
    print("status.backup:", b, f"(caught up {time.time() - t0:.1f}s after the workload started)")
    assert parse_time(b["firstRecoverableTime"]) <= marks[0][1] + 1
    assert b.get("lastError") is None and b["lastSuccessfulUpload"]  # a null is dropped by the patch
    for k in ("BackupRetentionPeriodStorageUsed", "SnapshotStorageUsed", "TotalBackupStorageBilled",
              "VolumeBytesUsed"):
        assert isinstance(b[k], int) and b[k] >= 0, (k, b)
    assert b["BackupRetentionPeriodStorageUsed"] > 0
    assert cond(get_ac(env, SRC), "Ready")["status"] == "True"
    with urllib.request.urlopen(f"http://127.0.0.1:{env['op'].metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert "tidemark_cluster_volume_used_bytes{" in text and "tidemark_cluster_backup_billed_bytes{" in text
    assert "tidemark_cluster_backup_restorable_window_seconds{" in text
    assert cond(get_ac(env, SRC), "BackupHealthy")["status"] == "True"


def test_snapshot_becomes_ready_and_is_deleted_with_its_resource(env: dict[str, Any]) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AuroraSnapshot", "metadata": {"name": "snap1"},
            "spec": {"cluster": SRC}}
    create(env, body, SNAPSHOT_PLURAL)

    def get() -> dict[str, Any]:
        return env["co"].get_namespaced_custom_object(GROUP, VERSION, env["ns"], SNAPSHOT_PLURAL, "snap1",
                                                      _request_timeout=5)

    snap = wait_for(lambda: (lambda s: s if (s.get("status") or {}).get("phase") == "Ready" else None)(get()),
                    90, "AuroraSnapshot Ready", interval=1)
    st = snap["status"]
    print("snapshot status:", st)
    assert st["lsn"] > 0 and st["sizeBytes"] > 0 and st["pages"] > 0 and st["snapshotTime"]
    assert "tidemark.dev/operator" in snap["metadata"].get("finalizers", [])
    manual = [o.key for o in env["store"].list("manual/")]
    assert any(st["snapshotName"] in k and k.endswith("manifest.json") for k in manual), manual
    wait_events(env, "snap1", {"SnapshotStarted", "SnapshotReady"})

    # a snapshot of a cluster without backup fails with a reason
    create(env, {**body, "metadata": {"name": "snap-nobackup"}, "spec": {"cluster": "no-such-cluster"}},
           SNAPSHOT_PLURAL)
    bad = wait_for(lambda: (lambda s: s if (s.get("status") or {}).get("phase") == "Failed" else None)(
        env["co"].get_namespaced_custom_object(GROUP, VERSION, env["ns"], SNAPSHOT_PLURAL, "snap-nobackup",
                                               _request_timeout=5)), 60, "snapshot Failed", interval=1)
    assert bad["status"]["reason"] == "ClusterNotFound", bad["status"]
    env["co"].delete_namespaced_custom_object(GROUP, VERSION, env["ns"], SNAPSHOT_PLURAL, "snap-nobackup",
                                              _request_timeout=10)

    env["co"].delete_namespaced_custom_object(GROUP, VERSION, env["ns"], SNAPSHOT_PLURAL, "snap1",
                                              _request_timeout=10)

    def gone() -> bool:
        try:
            get()
            return False
        except ApiException as exc:
            return exc.status == 404

    wait_for(gone, 60, "AuroraSnapshot deleted (finalizer released)", interval=1)
    assert not [o.key for o in env["store"].list("manual/") if st["snapshotName"] in o.key]


def test_unreachable_store_shows_in_last_error_and_never_breaks_ready(env: dict[str, Any]) -> None:
    dead = {**backup_spec(env, "offline"), "endpoint": "http://127.0.0.1:9"}  # nothing listens
    create(env, cluster_body("offline", backup=dead))
    try:
        wait_for(lambda: ready(env, "offline"), 120, "cluster with an unreachable store Ready", interval=0.5)
        b = wait_for(lambda: ((get_ac(env, "offline").get("status") or {}).get("backup") or {}).get("lastError"),
                     60, "status.backup.lastError", interval=1)
        print("unreachable store lastError:", b)
        assert "127.0.0.1:9" in b or "connect" in b.lower(), b
        assert cond(get_ac(env, "offline"), "Ready")["status"] == "True"
    finally:
        env["co"].delete_namespaced_custom_object(GROUP, VERSION, env["ns"], PLURAL, "offline",
                                                  _request_timeout=10)
    # a restore from an unreachable store fails with the reason and builds nothing
    create(env, cluster_body("from-dead", restore={"source": {
        "target": f"s3://{env['minio'].bucket}/src", "endpoint": "http://127.0.0.1:9",
        "credentialsSecret": SECRET}}))
    obj = wait_for(lambda: (lambda o: o if cond(o, "Restored").get("reason") == "RestoreFailed" else None)(
        get_ac(env, "from-dead")), 60, "restore from a dead store Failed", interval=1)
    print("restore from a dead store:", cond(obj, "Restored")["message"])
    assert "127.0.0.1:9" in cond(obj, "Restored")["message"]
    assert not env["apps"].list_namespaced_stateful_set(
        env["ns"], label_selector="tidemark.dev/cluster=from-dead", _request_timeout=5).items
    env["co"].delete_namespaced_custom_object(GROUP, VERSION, env["ns"], PLURAL, "from-dead",
                                              _request_timeout=10)


def test_restore_outside_the_window_fails_clearly_and_builds_nothing(env: dict[str, Any]) -> None:
    create(env, cluster_body("too-early", restore={"source": {"cluster": SRC},
                                                   "pointInTime": "2001-01-01T00:00:00Z"}))
    obj = wait_for(lambda: (lambda o: o if cond(o, "Restored").get("reason") == "RestoreFailed" else None)(
        get_ac(env, "too-early")), 60, "Restored=False RestoreFailed", interval=1)
    assert "outside the restorable window" in cond(obj, "Restored")["message"], obj["status"]
    assert cond(obj, "Ready")["status"] == "False" and obj["status"]["phase"] == "Failed"
    assert not env["apps"].list_namespaced_stateful_set(
        env["ns"], label_selector="tidemark.dev/cluster=too-early", _request_timeout=5).items
    wait_events(env, "too-early", {"RestoreFailed"})
    env["co"].delete_namespaced_custom_object(GROUP, VERSION, env["ns"], PLURAL, "too-early",
                                              _request_timeout=10)


def test_restore_cluster_comes_up_ready_with_exactly_the_data_at_t(env: dict[str, Any]) -> None:
    """Made as a user would: `kubectl tidemark restore src restored --to-time T` (the new
    cluster backs up next to its source, at s3://BUCKET/restored)."""
    model, marks = env["model"], env["marks"]
    t_us = marks[len(marks) // 2][1] + 1  # mid-workload: some commits before T, some after
    done = subprocess.run([str(Path(sys.executable).with_name("kubectl-tidemark")), "restore", SRC, RESTORED,
                           "--to-time", iso(t_us), "--no-wait", "--json",
                           "--kubeconfig", str(env["rig"].kubeconfig), "-n", env["ns"]],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert json.loads(done.stdout)["name"] == RESTORED
    spec = get_ac(env, RESTORED)["spec"]
    assert spec["restore"] == {"source": {"cluster": SRC}, "pointInTime": iso(t_us)}, spec
    assert spec["backup"]["target"] == backup_spec(env, "restored")["target"], spec["backup"]
    seen: set[str] = set()

    def restored_ready() -> dict[str, Any] | None:
        o = get_ac(env, RESTORED)
        seen.add(((o.get("status") or {}).get("restore") or {}).get("phase", ""))
        if (o.get("status") or {}).get("phase") == "Restoring":
            assert cond(o, "Ready").get("status") != "True", "Ready while restoring"
        return ready(env, RESTORED)

    obj = wait_for(restored_ready, 240, "restored cluster Ready", interval=0.5)
    rs = obj["status"]["restore"]
    print("status.restore:", rs, "phases seen:", seen)
    expected = Timeline(marks).lsn_at(t_us)
    assert rs["phase"] == "Done" and rs["lsn"] == expected, (rs, expected)
    assert cond(obj, "Restored")["status"] == "True"
    assert {"Validating", "Done"} <= seen or "Loading" in seen, seen
    wait_events(env, RESTORED, {"RestoreValidating", "RestoreLoading", "Restored"})

    pages = asyncio.run(_read(env, RESTORED, model.pages()))
    got = check_pages(pages, model, marks, t_us)
    print("restored at T:", got)
    assert 0 < got["present"] < got["acked"], got  # genuinely a point inside the workload

    # the restored cluster is writable and backs up on its own (its own prefix), starting
    # after the load: its pods roll once, a zone at a time, to turn the uploader on
    def rolled() -> bool:
        for z in ("zone-a", "zone-b", "zone-c"):
            sts = env["apps"].read_namespaced_stateful_set(f"{RESTORED}-{z}", env["ns"], _request_timeout=5)
            st = sts.status
            if f"s3://{env['minio'].bucket}/restored" not in sts.spec.template.spec.containers[0].command:
                return False
            if not (st.current_revision == st.update_revision and st.ready_replicas == sts.spec.replicas):
                return False
        return ready(env, RESTORED) is not None

    wait_for(rolled, 300, "the restored cluster's pods rolled with its own backup target", interval=1)
    more, _marks2 = asyncio.run(_workload(env, 2, RESTORED))
    assert sum(1 for m in more.mtrs.values() if m.acked) > 0

    def own_backup() -> str | None:
        b = (get_ac(env, RESTORED).get("status") or {}).get("backup") or {}
        env["last_backup"] = b
        return b.get("latestRestorableTime")

    try:
        # (its pods roll once, a zone at a time, to turn the uploader on after the load)
        wait_for(own_backup, 240, "the restored cluster's own backup is restorable", interval=1)
    finally:
        print("restored status.backup:", env.get("last_backup"))


def test_restore_interrupted_by_an_operator_restart_is_redone_from_scratch(env: dict[str, Any]) -> None:
    """SIGKILL the operator while it loads the backup: the next operator wipes the new
    pods' segments and loads again; the cluster turns Ready only with exactly the data at T."""
    env["co"].delete_namespaced_custom_object(GROUP, VERSION, env["ns"], PLURAL, RESTORED,
                                              _request_timeout=10)  # frees its 6 node processes
    model, marks = env["model"], env["marks"]
    t_us = marks[-1][1]  # the end of the workload: everything acknowledged
    name = "restored2"
    create(env, cluster_body(name, restore={"source": {"cluster": SRC}, "pointInTime": iso(t_us)}))

    def phase() -> str | None:
        return ((get_ac(env, name).get("status") or {}).get("restore") or {}).get("phase")

    seen = wait_for(lambda: (lambda p: p if p in ("Loading", "Done") else None)(phase()), 180,
                    "the restore loading", interval=0.1)
    assert seen == "Loading", "the load finished before the test could interrupt it"
    env["op"].kill()  # SIGKILL mid-load
    assert get_ac(env, name)["status"]["restore"]["loadStarted"] is True
    env["op"].start()
    obj = wait_for(lambda: ready(env, name), 300, "interrupted restore redone and Ready", interval=0.5)
    rs = obj["status"]["restore"]
    print("status.restore after the interruption:", rs)
    assert rs["phase"] == "Done" and rs["attempt"] >= 2 and rs["lsn"] == Timeline(marks).lsn_at(t_us)
    wait_events(env, name, {"RestoreInterrupted", "RestoreWiped", "Restored"})
    pages = asyncio.run(_read(env, name, model.pages()))
    got = check_pages(pages, model, marks, t_us)
    assert got["present"] == got["acked"], got


def test_chart_ships_the_repo_crds() -> None:
    for name in ("auroraclusters.tidemark.dev.yaml", "aurorasnapshots.tidemark.dev.yaml"):
        assert (ROOT / "charts" / "tidemark" / "files" / "crds" / name).read_text() == (ROOT / "crds" / name).read_text()

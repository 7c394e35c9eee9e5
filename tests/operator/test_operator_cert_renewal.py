"""A renewed certificate reaching live pods on the rig (issue #14): the operator re-issues
a serving certificate (same CA), the pod runner refreshes the mounted Secret files as the
kubelet does (`..data` swapped atomically), and the running processes (storage nodes,
`sql serve`) present the new certificate without a restart, while a workload commits.

Renewal is forced without waiting 60 days: the Secret's certificate is replaced by one of
the same CA issued "89 days ago" (valid one more day). The operator keeps the expiry it
read in its memo and reads the Secret again only when that expiry nears or after a
restart (node_tls_access.py), so the test restarts the operator (SIGTERM, start): its
first pass finds the certificate due and re-issues it. That gives two rotations under
the workload: the injected certificate, then the operator's.

The tests share one operator (module scope); each makes and deletes its own cluster."""

from __future__ import annotations

import base64
import datetime as dt
import signal
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from rigenv import (
    NAME,
    assert_no_write_lost,
    cluster_body,
    get_ac,
    operator_env,
    ready,
    served,
    workload_during,
)

from tidemark_compute.topology import client_tls_verify_ca
from tidemark_operator import instancetls, nodetls
from tidemark_operator.model import GROUP, NODE_PORT, PLURAL, SQL_ADMIN_PORT, SQL_PORT, VERSION
from tidemark_rig.control_plane import ControlPlane
from tidemark_rig.pod_runner import read_state
from tidemark_rig.procs import wait_for

pytestmark = [pytest.mark.rig, pytest.mark.operator, pytest.mark.security, pytest.mark.timeout(600)]

DB = "renew-db"
AGED = dt.timedelta(days=nodetls.CERT_DAYS - 1)  # issued that long ago: valid one more day
PROBE_TLS = ssl.create_default_context()  # as the kubelet's HTTPS probe: not verified
PROBE_TLS.check_hostname = False
PROBE_TLS.verify_mode = ssl.CERT_NONE


@pytest.fixture(scope="module")
def env(rig_cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with operator_env(rig_cluster, tmp_path_factory) as e:
        yield e


# -- helpers -------------------------------------------------------------------------------

def der_of(pem_b64: str) -> bytes:
    return x509.load_pem_x509_certificate(base64.b64decode(pem_b64)).public_bytes(Encoding.DER)


def serial(der: bytes) -> str:
    c = x509.load_der_x509_certificate(der)
    return f"{c.serial_number:x}"[:12] + f"..(until {c.not_valid_after_utc:%Y-%m-%d})"


def secret_data(e: dict[str, Any], name: str) -> dict[str, str]:
    return dict(e["core"].read_namespaced_secret(name, e["ns"], _request_timeout=5).data)


def renewals(e: dict[str, Any], cluster: str, secret: str) -> list[Any]:
    """The cluster's CertificateRenewed events about SECRET."""
    return [ev for ev in e["core"].list_namespaced_event(
        e["ns"], field_selector=f"involvedObject.name={cluster}", _request_timeout=5).items
        if ev.reason == "CertificateRenewed" and f"Secret {secret} " in (ev.message or "")]


def age_certificate(e: dict[str, Any], secret: str, leaf: nodetls.Leaf, ca_secret: str) -> bytes:
    """SECRET's serving certificate replaced by one of the same CA valid one more day
    (as if issued 89 days ago); its DER."""
    ca_data = secret_data(e, ca_secret)
    aged = nodetls.leaf_entries(ca_data, leaf, nodetls.now() - AGED)
    e["core"].patch_namespaced_secret(secret, e["ns"], {"data": {
        nodetls.CERT_ITEM: aged[nodetls.CERT_ITEM], nodetls.KEY_ITEM: aged[nodetls.KEY_ITEM]}},
        _request_timeout=10)
    return der_of(aged[nodetls.CERT_ITEM])


def restart_operator(e: dict[str, Any]) -> None:
    e["op"].kill(signal.SIGTERM)
    e["op"].start()


def pids(e: dict[str, Any], uids: set[str]) -> dict[str, tuple[int | None, int]]:
    """The pod runner's process of each pod: (pid, restarts)."""
    state = read_state(e["rig"].dir)
    return {uid: (state[uid]["pid"], state[uid]["restarts"]) for uid in uids if uid in state}


def wait_served(what: str, targets: dict[str, tuple[str, int, bool]], trust: ssl.SSLContext,
                want: bytes, timeout: float) -> float:
    """Wait until every target (name -> ip, port, postgres) presents WANT; seconds taken."""
    t0 = time.monotonic()
    seen: dict[str, str] = {}

    def all_serve() -> bool:
        for name, (ip, port, pg) in targets.items():
            try:
                seen[name] = serial(served(ip, port, trust, pg))
            except (OSError, AssertionError) as exc:
                seen[name] = repr(exc)
        return all(v == serial(want) for v in seen.values())

    wait_for(all_serve, timeout, f"{what}: every target serving {serial(want)}", interval=0.5,
             on_timeout=lambda: f"served: {seen}")
    return time.monotonic() - t0


def delete_cluster(e: dict[str, Any], name: str) -> None:
    e["co"].delete_namespaced_custom_object(GROUP, VERSION, e["ns"], PLURAL, name, _request_timeout=10)
    wait_for(lambda: not e["core"].list_namespaced_pod(e["ns"], label_selector=f"tidemark.dev/cluster={name}",
                                                       _request_timeout=5).items,
             90, f"{name}'s pods gone", interval=1)


# -- tests ---------------------------------------------------------------------------------

def test_a_renewed_node_certificate_reaches_the_running_nodes_with_no_failed_commit(env: dict[str, Any]) -> None:
    """Storage cluster Ready, a verifying workload running; the node-tls Secret's
    certificate aged to one day of validity (every node serves it, unrestarted), then the
    operator restarted: it re-issues the certificate (same CA, 90 days, CertificateRenewed)
    and every storage pod serves the new one (a fresh handshake to its pod IP, verified
    against the cluster's CA); same processes throughout; no failed commit, every
    acknowledged one read back."""
    ns, core = env["ns"], env["core"]
    env["co"].create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, cluster_body(NAME), _request_timeout=10)
    try:
        wait_for(lambda: ready(env), 120, "AuroraCluster Ready with 4/4 healthy PGs", interval=0.5)
        secret = f"{NAME}-node-tls"
        pods = core.list_namespaced_pod(ns, label_selector=f"tidemark.dev/cluster={NAME}", _request_timeout=5).items
        assert len(pods) == 6
        targets = {p.metadata.name: (p.status.pod_ip, NODE_PORT, False) for p in pods}
        uids = {p.metadata.uid for p in pods}
        trust = client_tls_verify_ca(ca_pem=nodetls.ca_pem(secret_data(env, secret)))
        first = der_of(secret_data(env, secret)[nodetls.CERT_ITEM])
        wait_served("before", targets, trust, first, 30)
        before = pids(env, uids)
        assert len(before) == 6 and all(pid for pid, _r in before.values()), before
        assert not renewals(env, NAME, secret)
        ca_before = secret_data(env, secret)[nodetls.CA_ITEM]
        timings: dict[str, float] = {}

        def rotate() -> None:
            aged = age_certificate(env, secret, nodetls.node_leaf(NAME, ns), secret)
            timings["aged_served_s"] = wait_served("the aged certificate", targets, trust, aged, 60)
            t0 = time.monotonic()
            restart_operator(env)
            wait_for(lambda: renewals(env, NAME, secret), 150, "a CertificateRenewed event", interval=0.5)
            timings["renewed_event_s"] = time.monotonic() - t0
            renewed = der_of(secret_data(env, secret)[nodetls.CERT_ITEM])
            assert renewed not in (first, aged)
            timings["renewed_served_s"] = wait_served("the renewed certificate", targets, trust, renewed, 60)
            timings["renewed"] = renewed  # type: ignore[assignment]

        out = workload_during(env, rotate, settle=2.0)
        print(f"rotation under the workload: {out['acked']} acked, {out['during']} during the rotation "
              f"({out['action_s']:.1f} s), max gap {out['max_gap']:.2f} s; "
              + ", ".join(f"{k} {v:.1f}" for k, v in timings.items() if isinstance(v, float)))
        assert_no_write_lost(out)
        renewed_cert = x509.load_der_x509_certificate(timings["renewed"])  # type: ignore[arg-type]
        assert secret_data(env, secret)[nodetls.CA_ITEM] == ca_before  # same CA: no client's trust changed
        left = renewed_cert.not_valid_after_utc - nodetls.now()
        assert dt.timedelta(days=nodetls.CERT_DAYS - 1) < left <= dt.timedelta(days=nodetls.CERT_DAYS)
        assert len(renewals(env, NAME, secret)) == 1
        assert pids(env, uids) == before  # the nodes reloaded the files: no process restarted
        assert ready(env), get_ac(env).get("status")
    finally:
        delete_cluster(env, NAME)


def _writer(e: dict[str, Any]) -> Any:
    got = [p for p in e["core"].list_namespaced_pod(
        e["ns"], label_selector=f"tidemark.dev/cluster={DB},tidemark.dev/role=writer", _request_timeout=5).items
        if p.metadata.deletion_timestamp is None and p.status.pod_ip]
    return got[0] if len(got) == 1 else None


def _instance_ready(e: dict[str, Any]) -> Any:
    st = (ready(e, DB) or {}).get("status") or {}
    writer = _writer(e)
    if st.get("readyInstances") != "1/1" or writer is None:
        return None
    try:
        with urllib.request.urlopen(f"https://{writer.status.pod_ip}:{SQL_ADMIN_PORT}/readyz", timeout=2,
                                    context=PROBE_TLS) as r:
            return writer if r.status == 200 else None
    except OSError:
        return None



def test_a_renewed_instance_certificate_reaches_the_running_writer_with_no_failed_insert(
        env: dict[str, Any], tmp_path: Any) -> None:
    """A cluster with one instance; an INSERT loop over PostgreSQL TLS (verify-ca) on one
    session, plus a new verify-ca session every round; the instance-tls Secret's
    certificate aged, then the operator restarted: it re-issues it (CertificateRenewed)
    and the writer presents the new certificate on its PostgreSQL and admin ports
    without a restart; no INSERT failed and every acknowledged row is there."""
    ns = env["ns"]
    env["co"].create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, cluster_body(DB, instances=1),
                                              _request_timeout=10)
    try:
        writer = wait_for(lambda: _instance_ready(env), 180, "1/1 instances Ready, the writer's /readyz 200",
                          interval=1)
        secret, ca_secret = f"{DB}-instance-tls", f"{DB}-node-tls"
        ip = writer.status.pod_ip
        targets = {"postgres": (ip, SQL_PORT, True), "admin": (ip, SQL_ADMIN_PORT, False)}
        ca_pem = nodetls.ca_pem(secret_data(env, ca_secret))
        trust = client_tls_verify_ca(ca_pem=ca_pem)
        ca_file = tmp_path / "ca.crt"
        ca_file.write_text(ca_pem)
        password = base64.b64decode(secret_data(env, f"{DB}-app")["password"]).decode()
        first = der_of(secret_data(env, secret)[nodetls.CERT_ITEM])
        wait_served("before", targets, trust, first, 30)
        before = pids(env, {writer.metadata.uid})
        assert not renewals(env, DB, secret)

        def session() -> psycopg.Connection:
            return psycopg.connect(host=ip, port=SQL_PORT, user="tidemark", password=password, dbname="tidemark",
                                   sslmode="verify-ca", sslrootcert=str(ca_file), connect_timeout=5,
                                   autocommit=True)

        with session() as conn:
            conn.execute("CREATE TABLE renew (k INT PRIMARY KEY)")
        stop = threading.Event()
        stats = {"acked": 0, "failed": 0, "sessions": 0, "errors": []}

        def insert_loop() -> None:
            k = 0
            with session() as conn:
                while not stop.is_set():
                    k += 1
                    try:
                        conn.execute("INSERT INTO renew VALUES (%s)", (k,))
                        stats["acked"] += 1
                    except psycopg.Error as exc:
                        stats["failed"] += 1
                        stats["errors"].append(repr(exc))  # type: ignore[attr-defined]
                        return
                    if k % 20 == 0:  # a new TLS session too: handshakes with whatever is served now
                        try:
                            with session() as probe:
                                probe.execute("SELECT 1")
                            stats["sessions"] += 1
                        except psycopg.Error as exc:
                            stats["errors"].append(f"new session: {exc!r}")  # type: ignore[attr-defined]
                    time.sleep(0.02)

        loop = threading.Thread(target=insert_loop, daemon=True)
        loop.start()
        try:
            time.sleep(2)
            aged = age_certificate(env, secret, instancetls.leaf(DB, ns), ca_secret)
            aged_s = wait_served("the aged certificate", targets, trust, aged, 60)
            restart_operator(env)
            wait_for(lambda: renewals(env, DB, secret), 150, "a CertificateRenewed event for the instances",
                     interval=0.5)
            renewed = der_of(secret_data(env, secret)[nodetls.CERT_ITEM])
            assert renewed not in (first, aged)
            renewed_s = wait_served("the renewed certificate", targets, trust, renewed, 60)
            time.sleep(2)
        finally:
            stop.set()
            loop.join(timeout=30)
        print(f"instance rotation: {stats['acked']} inserts, {stats['sessions']} new sessions; "
              f"aged served after {aged_s:.1f} s, renewed after {renewed_s:.1f} s")
        assert not loop.is_alive()
        assert stats["failed"] == 0 and not stats["errors"], stats["errors"]
        assert stats["acked"] > 50 and stats["sessions"] > 0, stats
        with session() as conn:
            assert conn.execute("SELECT count(*), max(k) FROM renew").fetchone() == (stats["acked"], stats["acked"])
        assert len(renewals(env, DB, secret)) == 1
        assert pids(env, {writer.metadata.uid}) == before  # sql serve reloaded: not restarted
    finally:
        delete_cluster(env, DB)

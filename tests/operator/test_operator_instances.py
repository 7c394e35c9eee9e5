"""Database instances of an AuroraCluster on the rig (issue #12): the operator's writer and
replica Deployments run `tidemark sql serve --from-cluster` as real processes (the pod
runner), reached through the endpoint addresses of the `-rw`/`-ro`/`-r` Services. On the
rig, pod IPs are loopback addresses, which the apiserver refuses in EndpointSlices (the
endpoint controller's updates fail: "may not be in the loopback range"), and there is no
kube-proxy; so a client here does what the endpoint controller and kube-proxy do: the
Service's selector, over pods that are Ready and not terminating, gives the addresses.

The tests share one operator and one cluster (module scope) and run in file order."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography import x509
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from rigenv import TIDEMARK, cluster_body, free_port, get_ac, kubectl, operator_env, ready, served

from tidemark_operator.model import GROUP, PLURAL, VERSION
from tidemark_protocol import pki
from tidemark_rig.control_plane import ControlPlane
from tidemark_rig.pod_runner import read_state
from tidemark_rig.procs import wait_for

pytestmark = [pytest.mark.rig, pytest.mark.operator]

DB = "db"


@pytest.fixture(scope="module")
def env(rig_cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with operator_env(rig_cluster, tmp_path_factory) as e:
        e["coord"] = client.CoordinationV1Api(e["api"])
        yield e


# as the kubelet's HTTPS probe: TLS, the certificate not verified (a test below verifies it)
PROBE_TLS = ssl.create_default_context()
PROBE_TLS.check_hostname = False
PROBE_TLS.verify_mode = ssl.CERT_NONE


def _readyz(ip: str) -> int:
    """The instance's readiness probe (its pod template's httpGet /readyz, scheme HTTPS);
    0: no answer."""
    try:
        with urllib.request.urlopen(f"https://{ip}:5433/readyz", timeout=2, context=PROBE_TLS) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def endpoints(e: dict[str, Any], service: str, probe: bool = True) -> list[str]:
    """Ready addresses of SERVICE, as its endpoint controller selects them. kwok marks a
    pod Ready at once, so PROBE does the kubelet's part: a pod counts once its readiness
    probe passes (without it, a client dials a writer pod that has not opened yet)."""
    selector = e["core"].read_namespaced_service(service, e["ns"], _request_timeout=5).spec.selector
    got = e["core"].list_namespaced_pod(e["ns"], label_selector=",".join(f"{k}={v}" for k, v in selector.items()),
                                        _request_timeout=5).items
    return sorted(p.status.pod_ip for p in got
                  if p.metadata.deletion_timestamp is None and p.status.pod_ip
                  and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
                  and (not probe or _readyz(p.status.pod_ip) == 200))


def password(e: dict[str, Any]) -> str:
    data = e["core"].read_namespaced_secret(f"{DB}-app", e["ns"], _request_timeout=5).data
    return base64.b64decode(data["password"]).decode()


def connect(e: dict[str, Any], service: str, timeout: int = 3, wait: float = 20.0,
            probe: bool = True) -> psycopg.Connection:
    """A session through SERVICE, retried for up to WAIT seconds (as a client would) while
    nobody it lists accepts: a pod being replaced."""
    deadline = time.monotonic() + wait
    while True:
        (ip, *_rest) = endpoints(e, service, probe) or ["0.0.0.0"]
        try:
            return psycopg.connect(host=ip, port=5432, user="tidemark", password=password(e), dbname="tidemark",
                                   connect_timeout=timeout, autocommit=True)
        except psycopg.OperationalError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def instances_up(e: dict[str, Any], n: int) -> dict[str, Any] | None:
    obj = ready(e, DB)
    st = (obj or {}).get("status") or {}
    return obj if st.get("readyInstances") == f"{n}/{n}" and st.get("currentPrimary") else None


def pods(e: dict[str, Any], role: str) -> list[Any]:
    return [p for p in e["core"].list_namespaced_pod(
        e["ns"], label_selector=f"tidemark.dev/cluster={DB},tidemark.dev/role={role}", _request_timeout=5).items
        if p.metadata.deletion_timestamp is None and p.status.pod_ip]


def test_instances_come_up_with_services_secret_and_lease(env: dict[str, Any]) -> None:
    env["co"].create_namespaced_custom_object(GROUP, VERSION, env["ns"], PLURAL, cluster_body(DB, instances=2),
                                              _request_timeout=10)
    obj = wait_for(lambda: instances_up(env, 2), 150, "cluster Ready with 2/2 instances serving", interval=1)
    st = obj["status"]
    roles = sorted(i["role"] for i in st["instances"])
    assert roles == ["replica", "writer"], st["instances"]
    (writer,) = pods(env, "writer")
    (replica,) = pods(env, "replica")
    assert st["currentPrimary"] == writer.metadata.name
    lease = env["coord"].read_namespaced_lease(f"{DB}-writer", env["ns"], _request_timeout=5)
    assert lease.spec.holder_identity == writer.metadata.name
    assert lease.metadata.annotations["tidemark.dev/volume-epoch"].isdigit()
    # Services select like CloudNativePG's: -rw the writer, -ro the replicas, -r both
    wait_for(lambda: endpoints(env, f"{DB}-rw") == [writer.status.pod_ip], 20, "-rw endpoints")
    assert endpoints(env, f"{DB}-ro") == [replica.status.pod_ip]
    assert endpoints(env, f"{DB}-r") == sorted([writer.status.pod_ip, replica.status.pod_ip])
    secret = env["core"].read_namespaced_secret(f"{DB}-app", env["ns"], _request_timeout=5)
    assert secret.type == "kubernetes.io/basic-auth"
    assert set(secret.data) == {"username", "password", "uri", "pgpass"}
    assert secret.metadata.owner_references[0].name == DB
    uri = base64.b64decode(secret.data["uri"]).decode()
    assert uri == f"postgresql://tidemark:{password(env)}@{DB}-rw.{env['ns']}.svc:5432/tidemark"
    # instance pods: spread over zones, same image as the storage pods, credentials mounted
    storage = env["apps"].read_namespaced_stateful_set(f"{DB}-zone-a", env["ns"], _request_timeout=5)
    dep = env["apps"].read_namespaced_deployment(f"{DB}-writer", env["ns"], _request_timeout=5)
    c = dep.spec.template.spec.containers[0]
    assert c.image == storage.spec.template.spec.containers[0].image
    assert c.command[1:6] == ["sql", "serve", "--from-cluster", DB, "--namespace"]
    assert dep.spec.template.spec.topology_spread_constraints[0].topology_key == "topology.kubernetes.io/zone"
    assert writer.spec.node_name != replica.spec.node_name
    # printer columns
    table = subprocess.run([kubectl(), "--kubeconfig", env["rig"].kubeconfig, "-n", env["ns"], "get", "ac", DB],
                           capture_output=True, text=True, timeout=20, check=True).stdout
    header, row = table.strip().splitlines()
    assert header.split() == ["NAME", "READY", "NODES", "PGS", "VDL", "INSTANCES", "PRIMARY", "AGE"]
    assert row.split()[5:7] == ["2/2", writer.metadata.name]


def test_the_password_is_in_no_spec_event_log_or_command_line(env: dict[str, Any]) -> None:
    pw = password(env)
    assert len(pw) >= 24
    places: dict[str, str] = {
        "AuroraCluster": json.dumps(get_ac(env, DB)),
        "events": json.dumps([e.to_dict() for e in env["core"].list_namespaced_event(
            env["ns"], _request_timeout=5).items], default=str),
        "pods": json.dumps([p.to_dict() for p in env["core"].list_namespaced_pod(
            env["ns"], _request_timeout=5).items], default=str),
        "deployments": json.dumps([d.to_dict() for d in env["apps"].list_namespaced_deployment(
            env["ns"], _request_timeout=5).items], default=str),
        "operator log": env["log"].read_text(errors="replace"),
        "pod command lines": json.dumps(read_state(env["rig"].dir)),
    }
    for log in (Path(env["rig"].dir) / "logs" / "pods").glob(f"{env['ns']}_*.log"):
        places[log.name] = log.read_text(errors="replace")
    assert any(name.startswith(f"{env['ns']}_{DB}-writer") for name in places)
    leaked = [name for name, text in places.items() if pw in text]
    assert not leaked, f"the password is in {leaked}"
    # the process reads it from the mounted Secret (mode 0400)
    (writer,) = pods(env, "writer")
    mounted = Path(env["rig"].dir) / "pods" / env["ns"] / writer.metadata.name / "etc/tidemark/credentials"
    assert (mounted / "password").read_text() == pw and (mounted / "password").stat().st_mode & 0o777 == 0o400
    # it runs as its ServiceAccount (a TokenRequest token in its kubeconfig), whose Role
    # grants the placement, the pods and the writer Lease, and no Secret
    kubeconfig = mounted.parents[2] / ".kube" / "config"
    user = json.loads(kubeconfig.read_text())["users"][0]
    assert user["name"] == f"{DB}-instance" and user["user"]["token"]
    as_pod = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    with pytest.raises(ApiException) as info:
        as_pod.read_namespaced_secret(f"{DB}-app", env["ns"], _request_timeout=5)
    assert info.value.status == 403
    assert as_pod.read_namespaced_config_map(f"{DB}-placement", env["ns"], _request_timeout=5)


def test_write_through_rw_read_through_ro(env: dict[str, Any]) -> None:
    with connect(env, f"{DB}-rw") as w:
        w.execute("CREATE TABLE t (k INT PRIMARY KEY, v TEXT)")
        w.execute("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
        assert w.execute("SELECT count(*) FROM t").fetchone() == (2,)
    with connect(env, f"{DB}-ro") as r:
        wait_for(lambda: r.execute("SELECT count(*) FROM t").fetchone() == (2,), 15, "rows on the replica",
                 interval=0.2)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            r.execute("INSERT INTO t VALUES (3, 'three')")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host=endpoints(env, f"{DB}-rw")[0], port=5432, user="tidemark", password="wrong",
                        dbname="tidemark", connect_timeout=3)


def test_clients_verify_the_instances_against_the_clusters_ca(env: dict[str, Any], tmp_path: Path) -> None:
    """TLS on the instances (#14): the CA in the `-ca` ConfigMap is the cluster's one CA
    (the node-tls Secret's), the `-instance-tls` Secret owned by the cluster; psycopg with
    sslmode=verify-full by the -rw/-ro Service's name (libpq's hostaddr dials the pod IP:
    on the rig names do not resolve) and verify-ca by IP are encrypted; another CA is
    refused; plain clients are refused (spec.instance.tls.required, true by default: SQLSTATE
    28000) and the default sslmode=prefer gets TLS; the admin endpoint is https, verified by
    chain (the operator's status reads of it keep readyInstances at 2/2)."""
    ns = env["ns"]
    cm = env["core"].read_namespaced_config_map(f"{DB}-ca", ns, _request_timeout=5)
    assert cm.metadata.owner_references[0].name == DB and set(cm.data) == {"ca.crt"}
    secret = env["core"].read_namespaced_secret(f"{DB}-instance-tls", ns, _request_timeout=5)
    assert secret.type == "kubernetes.io/tls" and secret.metadata.owner_references[0].name == DB
    assert set(secret.data) == {"ca.crt", "tls.crt", "tls.key"}  # never the CA's key
    node_ca = env["core"].read_namespaced_secret(f"{DB}-node-tls", ns, _request_timeout=5).data["ca.crt"]
    same = base64.b64decode(secret.data["ca.crt"]).decode() == cm.data["ca.crt"] == base64.b64decode(node_ca).decode()
    del secret, node_ca
    assert same, "the instances' CA is not the cluster's CA"
    ca = tmp_path / "ca.crt"
    ca.write_text(cm.data["ca.crt"])
    dep = env["apps"].read_namespaced_deployment(f"{DB}-writer", ns, _request_timeout=5)
    c = dep.spec.template.spec.containers[0]
    assert "--tls-cert" in c.command and "--require-tls" in c.command
    assert c.readiness_probe.http_get.scheme == "HTTPS"

    def session(service: str, **tls: str) -> psycopg.Connection:
        ip = wait_for(lambda: (endpoints(env, service) or [None])[0], 20, f"{service} endpoints")
        return psycopg.connect(hostaddr=ip, port=5432, user="tidemark", password=password(env), dbname="tidemark",
                               connect_timeout=5, autocommit=True, **{"host": ip, **tls})

    for service in (f"{DB}-rw", f"{DB}-ro"):
        with session(service, host=f"{service}.{ns}.svc", sslmode="verify-full", sslrootcert=str(ca)) as conn:
            assert conn.pgconn.ssl_in_use and conn.execute("SELECT count(*) FROM t").fetchone() == (2,)
        with session(service, sslmode="verify-ca", sslrootcert=str(ca)) as conn:
            assert conn.pgconn.ssl_in_use
    with pytest.raises(psycopg.OperationalError, match="TLS connections only"):
        session(f"{DB}-rw", sslmode="disable")
    with session(f"{DB}-rw") as conn:  # libpq's default, sslmode=prefer
        assert conn.pgconn.ssl_in_use
    other = tmp_path / "other-ca.crt"
    other.write_bytes(pki.cert_pem(pki.make_ca("another CA", 1, dt.datetime.now(dt.UTC))[0]))
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        session(f"{DB}-rw", sslmode="verify-ca", sslrootcert=str(other))
    with pytest.raises(psycopg.OperationalError):  # verify-full by IP: the certificate names the Services only
        session(f"{DB}-rw", sslmode="verify-full", sslrootcert=str(ca))
    trust = ssl.create_default_context(cafile=str(ca))
    trust.check_hostname = False
    (writer,) = pods(env, "writer")
    with urllib.request.urlopen(f"https://{writer.status.pod_ip}:5433/v1/status", timeout=5, context=trust) as r:
        assert json.loads(r.read())["role"] == "writer"
    with pytest.raises((OSError, http.client.HTTPException)):  # https only
        urllib.request.urlopen(f"http://{writer.status.pod_ip}:5433/v1/status", timeout=5)
    assert wait_for(lambda: instances_up(env, 2), 30, "2/2 instances as the operator reads them over https")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie until the runner reaps it counts as dead
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    return False


class Inserter:
    """A client inserting through -rw (reconnecting to whatever -rw lists), keeping what
    was acknowledged, and when, and what had an unknown outcome."""

    def __init__(self, e: dict[str, Any], table: str) -> None:
        self.e, self.table = e, table
        self.acked: list[int] = []
        self.acked_on: list[tuple[float, str]] = []  # (when, which endpoint address) per acknowledged row
        self.unknown: set[int] = set()
        self.errors: list[str] = []
        self.stop = threading.Event()
        with connect(e, f"{DB}-rw") as w:
            w.execute(f"CREATE TABLE {table} (k INT PRIMARY KEY)")
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        k = 0
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = connect(self.e, f"{DB}-rw", timeout=2, wait=0)
                k += 1
                conn.execute(f"INSERT INTO {self.table} VALUES (%s)", (k,))
                self.acked.append(k)
                self.acked_on.append((time.monotonic(), conn.info.host))
            except (psycopg.Error, OSError, ApiException) as exc:
                if k and (not self.acked or self.acked[-1] != k):
                    self.unknown.add(k)  # outcome unknown: the connection broke mid-statement
                self.errors.append(type(exc).__name__)
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.1)
        if conn is not None:
            conn.close()

    def __enter__(self) -> Inserter:
        self.thread.start()
        wait_for(lambda: len(self.acked) >= 20, 30, "inserts before the fault", interval=0.1)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def first_after(self, t: float, timeout: float, what: str) -> float:
        return wait_for(lambda: next((at for at, _host in self.acked_on if at > t), None), timeout, what,
                        interval=0.05)

    def check_nothing_lost(self) -> None:
        """Every acknowledged row is there (read through the new -rw), nothing else but
        unknown outcomes, and the replica follows."""
        with connect(self.e, f"{DB}-rw") as w:
            got = {k for (k,) in w.execute(f"SELECT k FROM {self.table}").fetchall()}
        missing = set(self.acked) - got
        assert not missing, f"acknowledged rows lost: {sorted(missing)[:20]}"
        assert got <= set(self.acked) | self.unknown
        with connect(self.e, f"{DB}-ro") as r:
            wait_for(lambda: r.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0] >= len(self.acked), 30,
                     "replica caught up with the new writer", interval=0.2)

    def summary(self) -> str:
        return f"{len(self.acked)} acked, {len(self.unknown)} unknown outcome, errors {sorted(set(self.errors))}"


def test_a_users_certificate_on_the_sql_port_is_checked_served_and_rotated(env: dict[str, Any],
                                                                          tmp_path: Path) -> None:
    """spec.instance.tls.secretName (#14): a kubernetes.io/tls Secret the user keeps, as a
    cert-manager Certificate would (cert-manager itself does not run here: the test writes
    the Secret it would write, from a CA of its own). An unusable Secret blocks the
    instances with a status and an event while the running ones go on serving; a usable
    one rolls them to serve it on the PostgreSQL port (verify-full against the user's CA by
    the -rw name; the cluster's CA no longer verifies that port, its admin endpoint keeps
    the cluster's certificate); renewing the Secret under a running insert workload changes
    the served certificate with zero failed commits and no restart."""
    ns, name = env["ns"], f"{DB}-user-tls"
    now = dt.datetime.now(dt.UTC)
    ca, ca_key = pki.make_ca("a company CA", 30, now)
    names = [f"{DB}-{k}.{ns}.svc" for k in ("rw", "ro", "r")]

    def data(cert: bytes, key: bytes) -> dict[str, str]:
        entries = {"ca.crt": pki.cert_pem(ca), "tls.crt": cert, "tls.key": key}
        return {k: base64.b64encode(v).decode() for k, v in entries.items()}

    cert, key = pki.issue(ca, ca_key, names[0], names, 30, now)
    _other, wrong_key = pki.issue(ca, ca_key, "another", ["another"], 30, now)
    env["core"].create_namespaced_secret(ns, {"metadata": {"name": name}, "type": "kubernetes.io/tls",
                                              "data": data(cert, wrong_key)}, _request_timeout=5)
    env["co"].patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, DB,
                                             {"spec": {"instance": {"tls": {"secretName": name}}}}, _request_timeout=5)
    blocked = wait_for(lambda: ((get_ac(env, DB).get("status") or {}).get("instancesBlocked") or None), 60,
                       "instancesBlocked for a Secret with another certificate's key")
    assert blocked == f"TLS Secret {name}: tls.key is not the private key of tls.crt", blocked
    events = [ev for ev in env["core"].list_namespaced_event(ns, _request_timeout=5).items
              if ev.involved_object.name == DB and ev.reason == "TLSSecretUnusable"]
    assert events and all("PRIVATE KEY" not in ev.message for ev in events)
    with connect(env, f"{DB}-rw") as w:  # the running instances go on, with the cluster's certificate
        assert w.execute("SELECT 1").fetchone() == (1,)
    env["core"].replace_namespaced_secret(name, ns, {"metadata": {"name": name}, "type": "kubernetes.io/tls",
                                                     "data": data(cert, key)}, _request_timeout=5)

    user_ca, cluster_ca = tmp_path / "user-ca.crt", tmp_path / "cluster-ca.crt"
    user_ca.write_bytes(pki.cert_pem(ca))
    user_trust = ssl.create_default_context(cafile=str(user_ca))  # verify-ca: pod IPs
    user_trust.check_hostname = False

    def serving(serial: int) -> bool:
        """Both instances Ready and presenting the user's certificate SERIAL on 5432 (an
        old pod still serving the cluster's fails the handshake: wait_for retries)."""
        ips = endpoints(env, f"{DB}-r")
        return len(ips) == 2 and all(
            x509.load_der_x509_certificate(served(ip, 5432, user_trust, postgres=True)).serial_number == serial
            for ip in ips)

    def rolled() -> bool:
        c = env["apps"].read_namespaced_deployment(f"{DB}-writer", ns, _request_timeout=5).spec.template.spec.containers[0]
        return "--sql-tls-cert" in c.command and bool(instances_up(env, 2)) and serving(
            x509.load_pem_x509_certificate(cert).serial_number)
    wait_for(rolled, 180, "the instances rolled to serve the user's certificate")
    wait_for(lambda: not (get_ac(env, DB).get("status") or {}).get("instancesBlocked"), 30, "instancesBlocked cleared")
    cluster_ca.write_text(env["core"].read_namespaced_config_map(f"{DB}-ca", ns, _request_timeout=5).data["ca.crt"])

    def session(service: str, root: Path) -> psycopg.Connection:
        ip = wait_for(lambda: (endpoints(env, service) or [None])[0], 20, f"{service} endpoints")
        return psycopg.connect(hostaddr=ip, host=f"{service}.{ns}.svc", port=5432, user="tidemark",
                               password=password(env), dbname="tidemark", connect_timeout=5, autocommit=True,
                               sslmode="verify-full", sslrootcert=str(root))

    for service in (f"{DB}-rw", f"{DB}-ro"):
        with session(service, user_ca) as conn:
            assert conn.pgconn.ssl_in_use and conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
            session(service, cluster_ca)
    trust = ssl.create_default_context(cafile=str(cluster_ca))  # the admin endpoint: the cluster's certificate
    trust.check_hostname = False
    (writer,) = pods(env, "writer")
    with urllib.request.urlopen(f"https://{writer.status.pod_ip}:5433/v1/status", timeout=5, context=trust) as r:
        assert json.loads(r.read())["role"] == "writer"
    # Renewal, as cert-manager does it: the same Secret, a new certificate, the pods left running.
    pids = {p.metadata.uid: read_state(env["rig"].dir)[p.metadata.uid]["pid"] for p in pods(env, "writer")}
    renewed, renewed_key = pki.issue(ca, ca_key, names[0], names, 30, dt.datetime.now(dt.UTC))
    serial = x509.load_pem_x509_certificate(renewed).serial_number
    with Inserter(env, "renewed") as ins:
        env["core"].replace_namespaced_secret(name, ns, {"metadata": {"name": name}, "type": "kubernetes.io/tls",
                                                         "data": data(renewed, renewed_key)}, _request_timeout=5)
        wait_for(lambda: serving(serial), 60, "every instance serving the renewed certificate")
        n = len(ins.acked)
        wait_for(lambda: len(ins.acked) >= n + 20, 30, "inserts after the renewal", interval=0.1)
    print(f"\nuser certificate renewed under inserts: {ins.summary()}")
    assert not ins.errors and not ins.unknown, ins.summary()
    ins.check_nothing_lost()
    assert {p.metadata.uid: read_state(env["rig"].dir)[p.metadata.uid]["pid"] for p in pods(env, "writer")} == pids


def test_writer_pod_deleted_writes_resume_and_no_acknowledged_write_is_lost(env: dict[str, Any]) -> None:
    """A client keeps inserting through -rw while the writer pod is deleted: the
    Deployment's new pod opens the volume (recovery + seal), claims the Lease, -rw moves;
    every acknowledged row is there afterwards."""
    with Inserter(env, "acked") as ins:
        (old,) = pods(env, "writer")
        old_pid = read_state(env["rig"].dir)[old.metadata.uid]["pid"]
        t0 = time.monotonic()
        env["core"].delete_namespaced_pod(old.metadata.name, env["ns"], grace_period_seconds=0, _request_timeout=5)
        wait_for(lambda: not _alive(old_pid), 15, "the old writer's process killed by the pod runner",
                 interval=0.02)
        t_dead = time.monotonic()
        # the first insert acknowledged after the old process died: by the new writer
        # (a new pod on the same kwok node may well get the same address)
        first = ins.first_after(t_dead, 60, "inserts acknowledged again through -rw, by a new writer")
        failover_s = first - t0
        wait_for(lambda: sum(1 for t, _h in ins.acked_on if t > first) >= 5, 30, "more inserts on the new writer")
    print(f"\nfailover: writer pod deleted -> inserts acknowledged through -rw again in {failover_s:.2f} s "
          f"(old process dead after {t_dead - t0:.2f} s) ({ins.summary()})")
    (new,) = pods(env, "writer")
    assert new.metadata.name != old.metadata.name
    wait_for(lambda: (get_ac(env, DB).get("status") or {}).get("currentPrimary") == new.metadata.name, 30,
             "status.currentPrimary follows")
    ins.check_nothing_lost()
    assert failover_s < 30


PLUGIN = str(Path(sys.executable).with_name("kubectl-tidemark"))


def test_switchover_on_demand_moves_the_writer_and_loses_nothing(env: dict[str, Any]) -> None:
    """`kubectl tidemark switchover db` while a client inserts through -rw: the operator
    stops the writer pod (graceful), a new writer pod serves, status.switchover says Done
    with its duration, a Switchover event (not a Failover one), every acknowledged row is
    there; a request repeated with the same id does nothing more."""
    (old,) = pods(env, "writer")
    with Inserter(env, "switched") as ins:
        t0 = time.monotonic()
        res = subprocess.run([PLUGIN, "switchover", DB, "--json", "--timeout", "120", "--kubeconfig",
                              str(env["rig"].kubeconfig), "-n", env["ns"]], capture_output=True, text=True, timeout=150)
        assert res.returncode == 0, res.stderr[-2000:]
        doc = json.loads(res.stdout)
        first = ins.first_after(t0, 60, "inserts acknowledged through -rw after the switchover")
        wait_for(lambda: sum(1 for t, _h in ins.acked_on if t > first) >= 5, 30, "more inserts on the new writer")
    print(f"\nswitchover: {doc} ({ins.summary()})")
    (new,) = pods(env, "writer")
    assert doc["from"] == old.metadata.name and doc["to"] == new.metadata.name != old.metadata.name, doc
    assert doc["durationSeconds"] < 60, doc
    st = get_ac(env, DB)["status"]
    assert st["switchover"]["phase"] == "Done" and st["currentPrimary"] == st["targetPrimary"] == new.metadata.name
    def reasons() -> list[str]:
        """Events about the old writer going: "writer moved from OLD …", "writer pod OLD
        stopped" (an earlier test's Failover *to* OLD names it too, after "to")."""
        events = env["core"].list_namespaced_event(env["ns"], _request_timeout=5).items
        gone = (f"from {old.metadata.name} ", f"writer pod {old.metadata.name} ")
        return [ev.reason for ev in events if ev.involved_object.name == DB and ev.reason in
                ("Switchover", "SwitchoverStarted", "Failover") and any(g in (ev.message or "") for g in gone)]

    wait_for(lambda: {"Switchover", "SwitchoverStarted"} <= set(reasons()), 20, "the Switchover events")
    assert "Failover" not in reasons(), reasons()
    ins.check_nothing_lost()
    time.sleep(4)  # a few operator passes: the same request id is not acted on again
    assert [p.metadata.name for p in pods(env, "writer")] == [new.metadata.name]


def test_a_new_instance_template_rolls_the_replicas_first_then_the_writer(env: dict[str, Any]) -> None:
    """An instance-only template change (spec.instance.maxLagMs is on the command line):
    the replica pods are replaced first; the writer pod only once every replica runs the
    new template (a RollingUpdate event); writes go on, nothing acknowledged is lost."""
    (old_writer,) = pods(env, "writer")
    old_pid = read_state(env["rig"].dir)[old_writer.metadata.uid]["pid"]
    old_replicas = {p.metadata.name for p in pods(env, "replica")}
    assert old_replicas
    replicas_at_writer_change: set[str] = set()
    with Inserter(env, "rolled") as ins:
        env["co"].patch_namespaced_custom_object(GROUP, VERSION, env["ns"], PLURAL, DB,
                                                 {"spec": {"instance": {"maxLagMs": 6000}}}, _request_timeout=5)

        def writer_changed() -> bool:
            replicas = {p.metadata.name for p in pods(env, "replica")}
            writers = [p.metadata.name for p in pods(env, "writer")]
            if writers and writers != [old_writer.metadata.name]:
                replicas_at_writer_change.update(replicas)
                return True
            return False

        wait_for(writer_changed, 180, "the writer pod replaced", interval=0.2)
        # the old process acknowledges until the pod runner kills it: count from then on
        wait_for(lambda: not _alive(old_pid), 15, "the old writer's process killed", interval=0.05)
        ins.first_after(time.monotonic(), 60, "inserts acknowledged through -rw by the new writer")
    print(f"\nrolling update: replicas {sorted(old_replicas)} -> {sorted(replicas_at_writer_change)} before "
          f"the writer moved ({ins.summary()})")
    assert replicas_at_writer_change and not replicas_at_writer_change & old_replicas, \
        f"the writer was replaced while old replicas ran: {replicas_at_writer_change & old_replicas}"
    wait_for(lambda: instances_up(env, 2), 120, "2/2 instances serving after the update")
    ins.check_nothing_lost()
    events = [ev for ev in env["core"].list_namespaced_event(env["ns"], _request_timeout=5).items
              if ev.involved_object.name == DB]
    rolling = [ev.message for ev in events if ev.reason == "RollingUpdate"]
    assert any("replicas first" in m for m in rolling) and any("replaced now" in m for m in rolling), rolling
    # the writer's replacement was planned: never reported as a Failover away from it
    assert not [ev.message for ev in events if ev.reason == "Failover"
                and f"from {old_writer.metadata.name} " in ev.message]


def test_a_stale_writer_never_acknowledges_and_comes_back_when_its_successor_dies(
        env: dict[str, Any], tmp_path: Path) -> None:
    """A second writer process (outside the Deployment, as after a partition) opens the
    volume and claims the Lease while the writer pod's process keeps running: that one
    answers nothing more (57P01), its /readyz fails (so a kubelet drops it from -rw).
    When the intruder dies, the superseded writer sees the Lease unrenewed for its
    duration, exits, and its pod's restart opens the volume again: writes resume."""
    (pod,) = pods(env, "writer")
    ip = pod.status.pod_ip
    wait_for(lambda: _readyz(ip) == 200, 30, "the writer ready")
    (replica,) = pods(env, "replica")
    wait_for(lambda: _readyz(replica.status.pod_ip) == 200, 30, "the replica ready")
    old: psycopg.Connection | None = connect(env, f"{DB}-rw")
    old.execute("CREATE TABLE stale (k INT PRIMARY KEY, who TEXT)")
    old.execute("INSERT INTO stale VALUES (1, 'before')")
    pw_file = tmp_path / "credentials"
    pw_file.write_text(f"tidemark:{password(env)}\n")
    pw_file.chmod(0o600)
    port, admin = free_port(), free_port()
    log = (tmp_path / "intruder.log").open("wb")
    intruder = subprocess.Popen(
        [TIDEMARK, "sql", "serve", "--from-cluster", DB, "--namespace", env["ns"], "--role", "writer",
         "--identity", "intruder", "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
         "--password-file", str(pw_file)],
        env={**os.environ, "KUBECONFIG": str(env["rig"].kubeconfig)}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        def intruder_conn() -> psycopg.Connection | None:
            try:
                return psycopg.connect(host="127.0.0.1", port=port, user="tidemark", password=password(env),
                                       dbname="tidemark", connect_timeout=2, autocommit=True)
            except psycopg.OperationalError:
                return None

        new = wait_for(intruder_conn, 60, "the intruding writer serves", interval=0.3)
        t_open = time.monotonic()
        new.execute("INSERT INTO stale VALUES (2, 'intruder')")
        wait_for(lambda: env["coord"].read_namespaced_lease(f"{DB}-writer", env["ns"], _request_timeout=5)
                 .spec.holder_identity == "intruder", 10, "the Lease names the intruder")
        # the old writer: every statement refused from now on, none acknowledged (an open
        # session gets 57P01, a new one is refused at startup)
        stale_acks, refusals = [], []
        for k in range(100, 110):
            try:
                if old is None:
                    old = connect(env, f"{DB}-rw", wait=0, probe=False)
                old.execute("INSERT INTO stale VALUES (%s, 'stale')", (k,))
                stale_acks.append((k, time.monotonic() - t_open))
            except psycopg.Error as exc:
                refusals.append(type(exc).__name__)
                if old is not None:
                    old.close()
                old = None
            time.sleep(0.1)
        assert not stale_acks, f"a superseded writer acknowledged {stale_acks}"
        assert set(refusals) <= {"AdminShutdown", "OperationalError"}, refusals
        with pytest.raises(psycopg.OperationalError, match="no longer serves"):
            connect(env, f"{DB}-rw", wait=0, probe=False)
        wait_for(lambda: _readyz(ip) == 503, 10, "the stale writer's /readyz fails")
        new.execute("INSERT INTO stale VALUES (3, 'intruder')")
        new.close()
    finally:
        os.killpg(intruder.pid, signal.SIGKILL)
        intruder.wait(timeout=10)
        log.close()
        if old is not None:
            old.close()
    t_dead = time.monotonic()

    def back() -> list[Any] | None:
        try:
            with connect(env, f"{DB}-rw", timeout=2, wait=0) as c:
                c.execute("INSERT INTO stale VALUES (4, 'after')")
                return c.execute("SELECT k, who FROM stale ORDER BY k").fetchall()
        except psycopg.Error:
            return None

    rows = wait_for(back, 60, "the writer pod restarted and serving after the intruder died", interval=0.5)
    print(f"\nstale writer: back {time.monotonic() - t_dead:.1f} s after the intruder died (lease duration 10 s)")
    assert rows == [(1, "before"), (2, "intruder"), (3, "intruder"), (4, "after")]
    wait_for(lambda: (get_ac(env, DB).get("status") or {}).get("currentPrimary") == pod.metadata.name, 30,
             "currentPrimary is the writer pod again")


def test_writer_node_lost_the_operator_moves_the_writer_within_30s(env: dict[str, Any]) -> None:
    """The writer's kwok node goes NotReady (its processes die with it): the operator
    deletes the writer pod at once, the Deployment starts one on a Ready node, writes
    through -rw resume within Aurora's 30 s, none acknowledged is lost, `Failover` event."""
    rig = env["rig"]
    with connect(env, f"{DB}-rw") as w:
        w.execute("CREATE TABLE nodeloss (k INT PRIMARY KEY)")
    acked: list[int] = []
    acked_at: list[float] = []
    stop = threading.Event()

    def writer_loop() -> None:
        k, conn = 0, None
        while not stop.is_set():
            try:
                if conn is None:
                    conn = connect(env, f"{DB}-rw", timeout=2, wait=0)
                k += 1
                conn.execute("INSERT INTO nodeloss VALUES (%s)", (k,))
                acked.append(k)
                acked_at.append(time.monotonic())
            except (psycopg.Error, OSError, ApiException):
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.1)
        if conn is not None:
            conn.close()

    (old,) = pods(env, "writer")
    node = old.spec.node_name
    old_pid = read_state(rig.dir)[old.metadata.uid]["pid"]
    thread = threading.Thread(target=writer_loop, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(acked) >= 20, 30, "inserts before the node loss", interval=0.1)
        t0 = time.monotonic()
        rig.mark_node_not_ready(node)

        def dead() -> bool:
            if node in rig.ready_nodes():
                rig.mark_node_not_ready(node)  # kwok can race the NotReady patch with a heartbeat
            return not _alive(old_pid)

        wait_for(dead, 15, "the lost node's writer process killed", interval=0.05)
        t_dead = time.monotonic()
        first = wait_for(lambda: next((t for t in acked_at if t > t_dead), None), 60,
                         "inserts acknowledged again through -rw after the node loss", interval=0.1)
        failover_s = first - t0
        wait_for(lambda: sum(1 for t in acked_at if t > first) >= 5, 30, "more inserts on the new writer")
    finally:
        stop.set()
        thread.join(timeout=30)
        new_pods = pods(env, "writer")
        rig.restore_nodes()
    print(f"\nnode loss: writer's node NotReady -> inserts acknowledged through -rw again in {failover_s:.2f} s "
          f"(process dead after {t_dead - t0:.2f} s; {len(acked)} acked)")
    assert failover_s < 30
    (new,) = new_pods
    assert new.spec.node_name != node
    with connect(env, f"{DB}-rw") as w:
        got = {k for (k,) in w.execute("SELECT k FROM nodeloss").fetchall()}
    assert not set(acked) - got, f"acknowledged rows lost: {sorted(set(acked) - got)[:20]}"
    events = env["core"].list_namespaced_event(env["ns"], field_selector=f"involvedObject.name={DB}",
                                               _request_timeout=5).items
    assert any(e.reason == "InstanceNodeLost" and old.metadata.name in e.message for e in events)
    wait_for(lambda: any(e.reason == "Failover" for e in env["core"].list_namespaced_event(
        env["ns"], field_selector=f"involvedObject.name={DB}", _request_timeout=5).items), 30, "a Failover event")


def test_a_writer_that_stops_renewing_its_lease_is_replaced_before_its_node_is_lost(env: dict[str, Any]) -> None:
    """The writer's process freezes (SIGSTOP: its ports stay bound, it renews and answers
    nothing) on a node that stays Ready, as a killed kind worker looks for ~40 s: the
    operator's Lease watch deletes the pod once the Lease has not moved for its 10 s + 2 s
    (`WriterLeaseExpired`), writes through -rw resume within 30 s, none acknowledged is
    lost; the writer template never shares a node with another writer pod."""
    rig = env["rig"]
    dep = env["apps"].read_namespaced_deployment(f"{DB}-writer", env["ns"], _request_timeout=5)
    (term,) = dep.spec.template.spec.affinity.pod_anti_affinity.required_during_scheduling_ignored_during_execution
    assert term.topology_key == "kubernetes.io/hostname"
    assert term.label_selector.match_labels["tidemark.dev/role"] == "writer"
    (old,) = pods(env, "writer")
    pid = read_state(rig.dir)[old.metadata.uid]["pid"]
    try:
        with Inserter(env, "frozen") as ins:
            t0 = time.monotonic()
            os.kill(pid, signal.SIGSTOP)
            first = wait_for(lambda: next((t for t, _ in ins.acked_on if t > t0 + 1), None), 60,
                             "inserts acknowledged again through -rw after the freeze", interval=0.1)
            failover_s = first - t0
            wait_for(lambda: sum(1 for t, _ in ins.acked_on if t > first) >= 5, 30, "more inserts on the new writer")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # the pod runner kills it with its pod; never leave it behind
    print(f"\nwriter frozen -> inserts acknowledged through -rw again in {failover_s:.2f} s ({len(ins.acked)} acked)")
    assert failover_s < 30
    (new,) = pods(env, "writer")
    assert new.metadata.name != old.metadata.name
    with connect(env, f"{DB}-rw") as w:
        got = {k for (k,) in w.execute("SELECT k FROM frozen").fetchall()}
    assert not set(ins.acked) - got, f"acknowledged rows lost: {sorted(set(ins.acked) - got)[:20]}"
    events = env["core"].list_namespaced_event(env["ns"], field_selector=f"involvedObject.name={DB}",
                                               _request_timeout=5).items
    assert any(e.reason == "WriterLeaseExpired" and old.metadata.name in e.message for e in events)


def test_scale_replicas_up_and_down_with_spec_instances(env: dict[str, Any]) -> None:
    def scale(n: int) -> None:
        env["co"].patch_namespaced_custom_object(GROUP, VERSION, env["ns"], PLURAL, DB, {"spec": {"instances": n}},
                                                 _request_timeout=10)
        wait_for(lambda: instances_up(env, n) and len(pods(env, "replica")) == n - 1, 120,
                 f"{n} instances serving", interval=1)

    scale(3)
    assert len(endpoints(env, f"{DB}-ro")) == 2 and len(endpoints(env, f"{DB}-r")) == 3
    with connect(env, f"{DB}-rw") as w:
        w.execute("INSERT INTO t VALUES (10, 'ten')")
    for ip in endpoints(env, f"{DB}-ro"):
        with psycopg.connect(host=ip, port=5432, user="tidemark", password=password(env), dbname="tidemark",
                             connect_timeout=3, autocommit=True) as r:
            wait_for(lambda r=r: r.execute("SELECT v FROM t WHERE k = 10").fetchone() == ("ten",), 60,
                     f"the row on replica {ip}", interval=0.2)
    scale(1)
    assert endpoints(env, f"{DB}-ro") == [] and len(endpoints(env, f"{DB}-rw")) == 1
    with connect(env, f"{DB}-rw") as w:
        w.execute("INSERT INTO t VALUES (11, 'eleven')")
        assert w.execute("SELECT count(*) FROM t").fetchone() == (4,)


async def test_the_lease_watch_times_the_lease_on_its_own_clock_and_deletes_in_two_steps() -> None:
    """No rig: a Lease unchanged for 10 + 2 s on the watcher's clock (whatever its
    renewTime says) and a writer that does not answer → deleted with its grace period,
    then at grace 0 once a successor is placed; a writer that answers is left alone."""
    from tidemark_operator import writer_watch
    from tidemark_operator.instances import InstancePod
    from tidemark_operator.state import ClusterState, LeaseSeen

    lease = {"metadata": {"resourceVersion": "7"},
             "spec": {"holderIdentity": "db-writer-1", "leaseDurationSeconds": 10, "renewTime": "2020-01-01T00:00:00Z"}}
    seen = writer_watch.seen_now(None, lease, 100.0)
    assert writer_watch.stale_holder(seen, 111.9) is None  # an old renewTime alone is no evidence
    assert writer_watch.stale_holder(writer_watch.seen_now(seen, lease, 112.5), 112.5) == "db-writer-1"
    moved = writer_watch.seen_now(seen, {**lease, "metadata": {"resourceVersion": "8"}}, 112.5)
    assert moved is not None and moved.since == 112.5 and writer_watch.stale_holder(moved, 113) is None

    class Kube:
        def __init__(self) -> None:
            self.calls: list[tuple[str, str]] = []

        def read(self, kind: str, name: str, ns: str) -> dict[str, Any]:
            return lease

        def delete_pod(self, name: str, ns: str) -> None:
            self.calls.append(("grace", name))

        def force_delete_pod(self, name: str, ns: str) -> None:
            self.calls.append(("now", name))

    class Nodes:
        status_timeout = 0.1

        def __init__(self, answer: dict[str, Any] | None) -> None:
            self.answer = answer

        async def call(self, *args: Any, **kw: Any) -> dict[str, Any] | None:
            from tidemark_operator.nodeclient import NodeError
            if self.answer is None:
                raise NodeError("timed out")
            return self.answer

    old = InstancePod("db-writer-1", "writer", "10.0.0.1", True, node="w4")
    events: list[tuple[str, str, str]] = []
    for answer, deleted in (({"serving": False}, None), (None, "db-writer-1")):
        kube, state = Kube(), ClusterState()
        state.lease_seen = LeaseSeen("db-writer-1", "7", time.monotonic() - 13, 10.0)
        got = await writer_watch.check(kube, Nodes(answer), state, "db", "ns", [old],  # type: ignore[arg-type]
                                       lambda *e: events.append(e))
        assert got == deleted
    assert kube.calls == [("grace", "db-writer-1")] and events[-1][1] == "WriterLeaseExpired"
    new = InstancePod("db-writer-2", "writer", None, False, node="w7")
    await writer_watch.check(kube, Nodes(None), state, "db", "ns", [old, new],  # type: ignore[arg-type]
                             lambda *e: events.append(e))
    assert kube.calls == [("grace", "db-writer-1"), ("now", "db-writer-1")] and not state.replacing
    assert sum(e[1] == "WriterLeaseExpired" for e in events) == 1

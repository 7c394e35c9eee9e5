"""A playground fleet's own PKI: one CA per fleet, one server certificate per node and
per database instance for its loopback address (docs/wire.md "TLS").

    DIR/tls/ca.crt          the fleet's CA (what every client and node trusts)
    DIR/tls/ca.key          its key (0600): `playground up` signs new nodes' certificates
    DIR/tls/NAME.crt|.key   a node's or instance's certificate (SAN: its IP address), key (0600)

Certificates are re-issued (same CA) when they are within RENEW_BEFORE of expiry or name
another address; a node reloads its certificate files when they change (node/tls.py),
so rotation needs no restart.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tidemark_compute.topology import TLS_CA_FILE, TLS_DIR
from tidemark_protocol import pki

CA_DAYS = 365
NODE_DAYS = 30
RENEW_BEFORE = dt.timedelta(days=7)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def ensure_ca(directory: Path, name: str | None = None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The fleet's CA (made once; a fleet keeps its CA). Its name is unique, so two fleets'
    CAs are never mistaken for each other by name."""
    tls = directory / TLS_DIR
    tls.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path, key_path = tls / TLS_CA_FILE, tls / "ca.key"
    if cert_path.exists() and key_path.exists():
        return pki.load_ca(cert_path.read_bytes(), key_path.read_bytes())
    cert, key = pki.make_ca(name or f"tidemark playground CA {secrets.token_hex(4)}", CA_DAYS, _now())
    _write_private(key_path, pki.key_pem(key))
    _write_public(cert_path, pki.cert_pem(cert))
    return cert, key


def issue(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, common_name: str, host: str,
          days: float = NODE_DAYS) -> tuple[bytes, bytes]:
    """A server certificate for `host` (an IP address or a DNS name): (cert PEM, key PEM).
    The playground names each node's own address: clients check it (verify-full)."""
    return pki.issue(ca, ca_key, common_name, [host], days, _now())


def _current(path: Path, host: str) -> bool:
    """The certificate at `path` names `host` and is not close to expiry."""
    if not path.exists():
        return False
    return pki.current(x509.load_pem_x509_certificate(path.read_bytes()), RENEW_BEFORE, _now(), [host])


def certificate_for(directory: Path, name: str, host: str, force: bool = False) -> tuple[Path, Path]:
    """The certificate and key files of node or instance NAME, issued (or re-issued) when needed."""
    ca, ca_key = ensure_ca(directory)
    tls = directory / TLS_DIR
    cert_path, key_path = tls / f"{name}.crt", tls / f"{name}.key"
    if force or not _current(cert_path, host) or not key_path.exists():
        cert, key = issue(ca, ca_key, name, host)
        _write_private(key_path, key)  # the key first: a reload sees a matching pair soon after
        _write_public(cert_path, cert)
    return cert_path, key_path

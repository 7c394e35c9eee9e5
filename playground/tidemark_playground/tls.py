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
import ipaddress
import os
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tidemark_compute.topology import TLS_CA_FILE, TLS_DIR

CA_DAYS = 365
NODE_DAYS = 30
RENEW_BEFORE = dt.timedelta(days=7)


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


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def ensure_ca(directory: Path, name: str | None = None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The fleet's CA (made once; a fleet keeps its CA). Its name is unique, so two fleets'
    CAs are never mistaken for each other by name."""
    tls = directory / TLS_DIR
    tls.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path, key_path = tls / TLS_CA_FILE, tls / "ca.key"
    if cert_path.exists() and key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    key = ec.generate_private_key(ec.SECP256R1())
    name = name or f"tidemark playground CA {secrets.token_hex(4)}"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    _write_private(key_path, _key_pem(key))
    _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def issue(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, common_name: str, host: str,
          days: float = NODE_DAYS) -> tuple[bytes, bytes]:
    """A server certificate for `host` (an IP address or a DNS name): (cert PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _current(path: Path, host: str) -> bool:
    """The certificate at `path` names `host` and is not close to expiry."""
    if not path.exists():
        return False
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    if cert.not_valid_after_utc - _now() < RENEW_BEFORE:
        return False
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return host in [str(n) for n in names.get_values_for_type(x509.IPAddress)] + \
        names.get_values_for_type(x509.DNSName)


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

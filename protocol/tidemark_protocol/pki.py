"""Certificate building for a fleet's own CA (pure: PEM bytes in, PEM bytes out; no files,
and no clock: callers say what time it is).

One home for how Tidemark makes its certificates: the playground's per-fleet CA
(tidemark_playground.tls, files under DIR/tls) and the operator's per-AuroraCluster CA
(tidemark_operator.nodetls, a Secret) both build them here. Keys are ECDSA P-256;
certificates carry serverAuth and clientAuth (nodes present theirs to peers too)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BACKDATE = dt.timedelta(minutes=5)  # a peer whose clock is a little behind still accepts it


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_ca(cert: bytes, key: bytes) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A CA from its PEM certificate and key (ValueError when they do not load)."""
    private = serialization.load_pem_private_key(key, None)
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an EC key")
    return x509.load_pem_x509_certificate(cert), private


def make_ca(common_name: str, days: float, start: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new self-signed CA, valid from START for DAYS, that may sign leaf certificates
    only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start - BACKDATE).not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, common_name: str,
          hosts: Sequence[str], days: float, start: dt.datetime) -> tuple[bytes, bytes]:
    """A server (and client) certificate for HOSTS (IP addresses or DNS names, wildcards
    allowed), valid from START for DAYS, signed by CA: (cert PEM, key PEM)."""
    if not hosts:
        raise ValueError("a certificate needs at least one host")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start - BACKDATE).not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert_pem(cert), key_pem(key)


def names(cert: x509.Certificate) -> list[str]:
    """The certificate's SANs as text (IP addresses and DNS names)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n) for n in san.get_values_for_type(x509.IPAddress)] + san.get_values_for_type(x509.DNSName)


def current(cert: x509.Certificate, renew_before: dt.timedelta, at: dt.datetime,
            hosts: Sequence[str] = ()) -> bool:
    """CERT names every one of HOSTS and is, AT, further than RENEW_BEFORE from expiry."""
    if cert.not_valid_after_utc - at < renew_before:
        return False
    return set(hosts) <= set(names(cert))


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """CERT's signature verifies with CA's key (a re-issued certificate kept its CA)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def pair_problem(cert_pem: bytes, key_pem: bytes, at: dt.datetime) -> str | None:
    """Why CERT_PEM and KEY_PEM cannot serve TLS AT (None: they can): unreadable, a key
    that is not the certificate's, or a certificate outside its validity. Says nothing of
    the key's bytes (the message may end up in a status)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return "tls.crt is not a PEM certificate"
    try:
        key = serialization.load_pem_private_key(key_pem, None)
    except (ValueError, TypeError):  # TypeError: an encrypted key (no password here)
        return "tls.key is not an unencrypted PEM private key"
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        return "tls.key is not the private key of tls.crt"
    if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        return f"tls.crt is valid {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ} .. {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ} only"
    return None

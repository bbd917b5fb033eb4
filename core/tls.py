"""Mutual TLS: a private CA, role certificates, gRPC credentials and peer identity.

Every certificate carries its holder's role in the subject's organizational unit
(``service``, ``intake``, ``auditor``, ``connector``) and its name in the common name; servers
admit a peer by role (see :func:`peer_identity`). Keys are ECDSA P-256.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hedui.core.errors import CryptoError

ROLES = ("service", "intake", "auditor", "connector", "custodian")
_VALIDITY = dt.timedelta(days=825)


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def create_ca(name: str, now: dt.datetime) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + 4 * _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _subject(name: str, role: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hedui"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )


def request(name: str, role: str, hosts: Sequence[str] = ()) -> Issued:
    """A new key and a certificate signing request for ``name`` in ``role``: made on the
    party's own machine; only the request (``cert_pem`` holds the CSR) leaves it. ``hosts``:
    further DNS names or IP addresses the party's server answers on."""
    if role not in ROLES:
        raise CryptoError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    builder = x509.CertificateSigningRequestBuilder().subject_name(_subject(name, role))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    return Issued(csr.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def requested_hosts(csr_pem: bytes) -> list[str]:
    """The DNS names and IP addresses a signing request asks to be valid for."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return []
    return [str(n.value) for n in san if isinstance(n, x509.DNSName | x509.IPAddress)]


def _ca_parts(ca: Issued) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise CryptoError("the CA key is not an EC key")
    return ca_cert, ca_key


def sign_request(ca: Issued, csr_pem: bytes, *, now: dt.datetime) -> tuple[bytes, PeerIdentity]:
    """The CA's certificate for a signing request: the request's name and role, valid for
    client and server use under that name, on loopback and on the hosts the request lists."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise CryptoError("not a certificate signing request (PEM)") from None
    if not csr.is_signature_valid:
        raise CryptoError("the signing request's signature does not verify")
    who = _identity(csr.subject)
    if who.role not in ROLES or not who.name:
        raise CryptoError(f"the request names role {who.role!r}; one of {', '.join(ROLES)}")
    public = csr.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise CryptoError("the request's key is not an EC key")
    requested: list[x509.GeneralName] = []
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        requested = list(san.value)
    except x509.ExtensionNotFound:
        pass
    names: list[x509.GeneralName] = [
        x509.DNSName(who.name),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    names += [n for n in requested if n not in names]
    ca_cert, ca_key = _ca_parts(ca)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_subject(who.name, who.role))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), who


def issue(ca: Issued, *, name: str, role: str, now: dt.datetime) -> Issued:
    """A key and leaf certificate for ``name`` in ``role`` in one step (tests, unit fixtures)."""
    made = request(name, role)
    cert_pem, _ = sign_request(ca, made.cert_pem, now=now)
    return Issued(cert_pem, made.key_pem)


def revocation_list(ca: Issued, serials: Sequence[int], *, now: dt.datetime) -> bytes:
    """The CA's signed list of revoked certificate serial numbers (a CRL, PEM), valid 30 days."""
    ca_cert, ca_key = _ca_parts(ca)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=30))
    )
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(now - dt.timedelta(minutes=5))
            .build()
        )
    crl = builder.sign(ca_key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class TlsMaterial:
    """What one party needs for mutual TLS: the CA it trusts and its own certificate and key."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    crl_path: Path | None = None  # the CA's revocation list, checked by a server on each call

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)],
            root_certificates=self.ca_pem,
            require_client_auth=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem,
            private_key=self.key_pem,
            certificate_chain=self.cert_pem,
        )


@dataclass(frozen=True)
class PeerIdentity:
    name: str
    role: str


INSECURE_PEER = PeerIdentity("insecure-local", "insecure")


def _identity(subject: x509.Name) -> PeerIdentity:
    def attr(oid: x509.ObjectIdentifier) -> str:
        values = subject.get_attributes_for_oid(oid)
        return str(values[0].value) if values else ""

    return PeerIdentity(attr(NameOID.COMMON_NAME), attr(NameOID.ORGANIZATIONAL_UNIT_NAME))


def identity_from_pem(cert_pem: bytes) -> PeerIdentity:
    return _identity(_certificate(cert_pem).subject)


@functools.lru_cache(maxsize=1024)
def _certificate(cert_pem: bytes) -> x509.Certificate:
    """A peer certificate, parsed once however many calls it makes (identity, revocation)."""
    return x509.load_pem_x509_certificate(cert_pem)


def _peer_pem(context: grpc.ServicerContext) -> bytes | None:
    pems = list(context.auth_context().get("x509_pem_cert") or [])
    if not pems:
        return None
    first: bytes = pems[0]  # type: ignore[assignment]  # grpc-stubs types the values loosely
    return first


def peer_serial(context: grpc.ServicerContext) -> int | None:
    """The serial number of the peer's verified certificate, or None on a plaintext channel."""
    pem = _peer_pem(context)
    return None if pem is None else int(_certificate(pem).serial_number)


@dataclass
class Revocations:
    """The serial numbers a CA revoked, from its CRL file; read again whenever the file
    changes, so that `hedui ca revoke` and a copied list take effect without a restart. A list
    whose signature does not verify under the CA is refused (a forged list could un-revoke)."""

    ca_pem: bytes
    path: Path
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seen: tuple[int, int] | None = None
    _serials: frozenset[int] = frozenset()

    def revoked(self, serial: int) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False  # no list issued yet: nothing is revoked
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._seen:
                self._serials = self._load()
                self._seen = stamp
            return serial in self._serials

    def _load(self) -> frozenset[int]:
        ca = x509.load_pem_x509_certificate(self.ca_pem)
        try:
            crl = x509.load_pem_x509_crl(self.path.read_bytes())
        except ValueError:
            raise CryptoError(f"{self.path} is not a revocation list") from None
        ca_key = ca.public_key()
        if not isinstance(ca_key, ec.EllipticCurvePublicKey) or not crl.is_signature_valid(ca_key):
            raise CryptoError(f"{self.path} is not signed by this deployment's CA")
        return frozenset(r.serial_number for r in crl)


def peer_identity(context: grpc.ServicerContext) -> PeerIdentity | None:
    """The verified identity of the peer of a mutual-TLS call, or None on a plaintext channel."""
    pem = _peer_pem(context)
    return None if pem is None else identity_from_pem(pem)


def channel_options(server_name: str | None) -> list[tuple[str, object]]:
    """Channel options that make a client check the server certificate names ``server_name``."""
    opts: list[tuple[str, object]] = [
        ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ]
    if server_name:
        opts.append(("grpc.ssl_target_name_override", server_name))
    return opts

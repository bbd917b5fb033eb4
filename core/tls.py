"""Mutual TLS: a private CA, role certificates, gRPC credentials and peer identity.

Every certificate carries its holder's role in the subject's organizational unit
(``service``, ``intake``, ``auditor``, ``connector``) and its name in the common name; servers
admit a peer by role (see :func:`peer_identity`). Keys are ECDSA P-256.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

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


def issue(ca: Issued, *, name: str, role: str, now: dt.datetime) -> Issued:
    """A leaf certificate for ``name`` in ``role``, valid for client and server use on loopback."""
    if role not in ROLES:
        raise CryptoError(f"unknown role {role!r}")
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise CryptoError("the CA key is not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hedui"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    san = x509.SubjectAlternativeName(
        [
            x509.DNSName(name),
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


@dataclass(frozen=True)
class TlsMaterial:
    """What one party needs for mutual TLS: the CA it trusts and its own certificate and key."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

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


def identity_from_pem(cert_pem: bytes) -> PeerIdentity:
    cert = x509.load_pem_x509_certificate(cert_pem)

    def attr(oid: x509.ObjectIdentifier) -> str:
        values = cert.subject.get_attributes_for_oid(oid)
        return str(values[0].value) if values else ""

    return PeerIdentity(attr(NameOID.COMMON_NAME), attr(NameOID.ORGANIZATIONAL_UNIT_NAME))


def peer_identity(context: grpc.ServicerContext) -> PeerIdentity | None:
    """The verified identity of the peer of a mutual-TLS call, or None on a plaintext channel."""
    auth = context.auth_context()
    pems = list(auth.get("x509_pem_cert") or [])
    if not pems:
        return None
    first: bytes = pems[0]  # type: ignore[assignment]  # grpc-stubs types the values loosely
    return identity_from_pem(first)


def channel_options(server_name: str | None) -> list[tuple[str, object]]:
    """Channel options that make a client check the server certificate names ``server_name``."""
    opts: list[tuple[str, object]] = [
        ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ]
    if server_name:
        opts.append(("grpc.ssl_target_name_override", server_name))
    return opts

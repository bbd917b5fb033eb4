"""Mutual TLS: a private CA, role certificates, gRPC credentials and peer identity.

Every certificate carries its holder's role in the subject's organizational unit
(``service``, ``intake``, ``auditor``, ``connector``, ``custodian``, ``registry``) and its name in
the common name; servers admit a peer by role (see :func:`peer_identity`). Keys are ECDSA P-256.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hedui.core.errors import CryptoError

log = logging.getLogger("hedui.tls")

ROLES = ("service", "intake", "auditor", "connector", "custodian", "registry", "bureau", "witness")
# the household registry (and token authority) serves and calls nothing as a connector; its
# role is its own, for it alone. Registries enrolled before this role existed hold a
# ``connector`` certificate, which still works.
REGISTRY_ROLE = "registry"


def check_role(name: str, role: str) -> None:
    """Refuse a role hedui does not know, and the registry's role for another party."""
    if role not in ROLES:
        raise CryptoError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    if role == REGISTRY_ROLE and name != REGISTRY_ROLE:
        raise CryptoError(
            f"role registry is the household registry's own (its party name is registry), "
            f"not {name!r}'s"
        )


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
    check_role(name, role)
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
    check_role(who.name, who.role)
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


CRL_DAYS = 30  # a revocation list's validity: the CA's operator issues a fresh one before


def revocation_list(ca: Issued, serials: Sequence[int], *, now: dt.datetime, number: int) -> bytes:
    """The CA's signed list of revoked certificate serial numbers (a CRL, PEM), valid
    ``CRL_DAYS``; ``number`` (its CRL number) is above every earlier list's, so a server never
    goes back to an older one."""
    ca_cert, ca_key = _ca_parts(ca)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=CRL_DAYS))
        .add_extension(x509.CRLNumber(number), critical=False)
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


@dataclass(frozen=True)
class OutsideValidity:
    """A certificate used outside its dates at some time: ``"expired"`` (``at`` is its
    notAfter) or ``"not yet valid"`` (``at`` is its notBefore)."""

    state: str
    at: dt.datetime


def outside_validity(cert_pem: bytes, now: dt.datetime) -> OutsideValidity | None:
    """Whether the certificate ``cert_pem`` is expired or not yet valid at ``now`` (aware);
    for a bundle (a CA file holding the old and the new CA during a rotation), whether every
    certificate in it is, naming the first. :class:`CryptoError` when it holds no certificate
    (PEM)."""
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise CryptoError("not a certificate (PEM)") from None
    problems = []
    for cert in certs:
        if now < cert.not_valid_before_utc:
            problems.append(OutsideValidity("not yet valid", cert.not_valid_before_utc))
        elif now > cert.not_valid_after_utc:
            problems.append(OutsideValidity("expired", cert.not_valid_after_utc))
        else:
            return None
    return problems[0]


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
@dataclass(frozen=True)
class RevocationList:
    number: int  # its CRL number (0 for a list without one)
    next_update: dt.datetime
    serials: frozenset[int]


def check_revocation_list(
    ca_pem: bytes,
    crl_pem: bytes,
    where: str,
    *,
    now: dt.datetime | None = None,
    floor_path: Path | None = None,
    held_path: Path | None = None,
) -> RevocationList:
    """A revocation list signed by the CA ``ca_pem``; refused otherwise (a forged list could
    un-revoke a certificate), when past its next update at ``now``, or when its number is below
    the one recorded in ``floor_path`` (a party's highest accepted list) or below that of the
    list ``held_path`` (the one in place, however it got there: copied by hand after a
    revocation, before any server read it)."""
    ca = x509.load_pem_x509_certificate(ca_pem)
    try:
        crl = x509.load_pem_x509_crl(crl_pem)
    except ValueError:
        raise CryptoError(f"{where} is not a revocation list") from None
    ca_key = ca.public_key()
    if not isinstance(ca_key, ec.EllipticCurvePublicKey) or not crl.is_signature_valid(ca_key):
        raise CryptoError(f"{where} is not signed by this deployment's CA")
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = 0
    next_update = crl.next_update_utc
    if next_update is None:
        raise CryptoError(f"{where} has no next-update time; the CA issues lists that expire")
    if now is not None and now > next_update:
        raise CryptoError(
            f"{where} expired on {next_update:%Y-%m-%d %H:%M} UTC; ask the CA's operator for a "
            "fresh one (hedui ca refresh)"
        )
    floor = highest_accepted(floor_path)
    held = held_list_number(ca_pem, held_path)
    if number < max(floor, held):
        source = held_path if held > floor else floor_path
        raise CryptoError(
            f"{where} is list number {number}, older than number {max(floor, held)} this party "
            f"already holds or accepted ({source}): a rollback would un-revoke certificates; "
            "nothing was changed. Get the CA's current crl.pem (`hedui ca list` shows its number)"
        )
    return RevocationList(number, next_update, frozenset(r.serial_number for r in crl))


def held_list_number(ca_pem: bytes, held_path: Path | None) -> int:
    """The number of the revocation list at ``held_path`` when it is one of the CA ``ca_pem``
    (expired or not: its number still says which lists are older); 0 when there is none, or
    when it is not that CA's (a list of a replaced CA, or a damaged file, sets no floor)."""
    if held_path is None:
        return 0
    try:
        held = held_path.read_bytes()
    except FileNotFoundError:
        return 0
    except OSError as e:
        raise CryptoError(f"cannot read {held_path}: {e.strerror}") from None
    try:
        return check_revocation_list(ca_pem, held, str(held_path)).number
    except CryptoError:
        return 0


def highest_accepted(floor_path: Path | None) -> int:
    """The highest revocation list number a party recorded (0: none)."""
    if floor_path is None:
        return 0
    try:
        return int(floor_path.read_text(encoding="ascii").strip() or 0)
    except FileNotFoundError:
        return 0
    except (OSError, ValueError):
        raise CryptoError(f"{floor_path} is damaged; restore it from your backup") from None


def record_accepted(floor_path: Path, number: int) -> None:
    """Raise the party's recorded highest list number (never lowers it)."""
    if number > highest_accepted(floor_path):
        tmp = floor_path.with_name(floor_path.name + ".tmp")
        tmp.write_text(f"{number}\n", encoding="ascii")
        tmp.replace(floor_path)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Revocations:
    """The serial numbers a CA revoked, from its CRL file; read again whenever the file
    changes, so that `hedui ca revoke` and a copied list take effect without a restart.

    It fails closed: a missing list, one not signed by the CA, or one past its next-update time
    raises :class:`CryptoError` (the server then refuses every call). A list older than one
    already accepted (a lower CRL number: a backup restored by mistake, or a rollback that would
    un-revoke) is not taken: the highest number accepted is recorded beside the list
    (``crl.number``), so this holds across restarts; a running server keeps the newer list, a
    starting one refuses every call until the current list is back."""

    ca_pem: bytes
    path: Path
    clock: Callable[[], dt.datetime] = _utc_now
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seen: tuple[int, int] | None = None
    _in_force: RevocationList | None = None

    @property
    def floor(self) -> Path:
        return self.path.with_name("crl.number")

    def revoked(self, serial: int) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise CryptoError(
                f"{self.path} is missing: copy the CA's crl.pem there (hedui keys install --crl)"
            ) from None
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._seen:
                self._seen = None
                try:
                    read = check_revocation_list(
                        self.ca_pem, self.path.read_bytes(), str(self.path), floor_path=self.floor
                    )
                except CryptoError as e:
                    if self._in_force is None or "older than number" not in str(e):
                        raise
                    log.error("%s; kept the newer list in force", e)
                else:
                    record_accepted(self.floor, read.number)
                    self._in_force = read
                self._seen = stamp
            assert self._in_force is not None
            if self.clock() > self._in_force.next_update:
                raise CryptoError(
                    f"the revocation list in {self.path} expired on "
                    f"{self._in_force.next_update:%Y-%m-%d %H:%M} UTC: the CA's operator issues "
                    "a fresh one (hedui ca refresh) and copies it here"
                )
            return serial in self._in_force.serials


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

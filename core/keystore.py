"""The key directory of a deployment: every key and certificate ``hedui keys init`` creates.

    keys/ca.pem, ca.key                 private CA of the deployment
    keys/tls/<name>.pem, <name>.key     mTLS certificate per party (service, intake, auditor,
                                        registry and every connector)
    keys/connectors/<id>/signing.key    Ed25519 answer-signing key (signing.pub beside it)
    keys/connectors/<id>/integrity.key  the key that seals the connector's stored figures
    keys/custodian/paillier.key         Paillier private key (paillier.pub beside it)
    keys/custodian/judgement.key        Ed25519 key that signs its judgements (judgement.pub
                                        beside it; the service and auditors pin it)
    keys/service/audit.key              key of the audit tokens
    keys/log/log.key                    Ed25519 checkpoint-signing key (log.pub beside it)
    keys/token-authority/oprf-<n>.key   the OPRF key of token epoch n (RFC 9497 scalar)
    keys/token-authority/epoch          the current token epoch
    keys/token-authority/grant.key      Ed25519 key that signs token grants (grant.pub beside it)

No connector and not the verification service holds a token key: tokens come from the token
authority (see hedui.core.tokens).

Secret files are 0600 and refused when others may read them. ``init`` only adds what is
missing, so running it again reuses every existing key.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hedui.core import signing
from hedui.core.errors import CryptoError, KeyFileError
from hedui.core.keyfiles import (
    read_public,
    read_secret,
    replace_public,
    write_public,
    write_secret,
)
from hedui.core.paillier import DEFAULT_KEY_BITS, PrivateKey, PublicKey, generate_keypair
from hedui.core.tls import (
    REGISTRY_ROLE,
    Issued,
    PeerIdentity,
    TlsMaterial,
    check_revocation_list,
    create_ca,
    identity_from_pem,
    issue,
    record_accepted,
    request,
    revocation_list,
)
from hedui.core.tokens import KEY_BYTES, TokenKey, audit_token_key

if TYPE_CHECKING:
    from hedui.core.oprf import ServerKey

REGISTRY_ID = "registry"
SERVICE_PARTIES = {
    "service": "service",
    "intake": "intake",
    "auditor": "auditor",
    "custodian": "custodian",
}


CLIENT_ROLES = ("intake", "auditor", "bureau")


class KeyDir:
    def __init__(self, root: Path) -> None:
        self.root = root

    # -- paths ---------------------------------------------------------------------------
    def tls_paths(self, name: str) -> tuple[Path, Path]:
        return self.root / "tls" / f"{name}.pem", self.root / "tls" / f"{name}.key"

    def connector_dir(self, connector_id: str) -> Path:
        return self.root / "connectors" / connector_id

    @property
    def paillier_private_path(self) -> Path:
        return self.root / "custodian" / "paillier.key"

    @property
    def judgement_public_path(self) -> Path:
        return self.root / "custodian" / "judgement.pub"

    def ensure_judgement_key(self) -> None:
        """Make the custodian's judgement key pair when neither half exists (at enrolment, or
        a custodian enrolled before issue #24); its public half goes to the service
        (``judgement.pub``). A public half without its private key is a lost key: refused,
        never replaced (the service pinned it)."""
        private = self.root / "custodian" / "judgement.key"
        if not private.exists() and self.judgement_public_path.exists():
            raise KeyFileError(
                f"{private} is missing but judgement.pub is there: restore the key from the "
                "custodian's backup (a new one would not match what the service pinned)"
            )
        _signing_pair(private, self.judgement_public_path)

    def judgement_signing_key(self) -> Ed25519PrivateKey:
        """The custodian's judgement key (made by :meth:`ensure_judgement_key`)."""
        return _private(self.root / "custodian" / "judgement.key")

    def judgement_verify_key(self) -> Ed25519PublicKey:
        """The custodian's judgement key as the service and auditors pin it."""
        path = self.judgement_public_path
        if not path.exists():
            raise KeyFileError(
                f"{path} does not exist: copy custodian/judgement.pub from the key custodian's "
                "key directory (the custodian makes it when it first starts)"
            )
        return _public(path)

    @property
    def paillier_public_path(self) -> Path:
        return self.root / "custodian" / "paillier.pub"

    # -- creation ------------------------------------------------------------------------
    def init(
        self,
        connector_ids: Iterable[str],
        *,
        paillier_bits: int = DEFAULT_KEY_BITS,
        now: dt.datetime | None = None,
        on_create: Callable[[str], None] = lambda _: None,
    ) -> None:
        """Create a deployment's keys in an empty key directory; in an existing one, check that
        every key is there and refuse, naming the file, when one is missing. hedui never
        silently replaces a key: a new audit key would make every earlier entry unsearchable, a
        new log key would sign another history, a new token key would answer 0 for everyone."""
        ids = list(connector_ids)
        if (self.root / "ca.pem").exists():
            self.check(ids)
            return
        when = now or dt.datetime.now(dt.UTC)
        ca_cert, ca_key = self.root / "ca.pem", self.root / "ca.key"
        ca = create_ca("hedui deployment CA", when)
        write_secret(ca_key, ca.key_pem)
        on_create("certificate authority")
        ca = Issued(ca.cert_pem, ca.key_pem)
        write_public(self.root / "crl.pem", revocation_list(ca, [], now=when, number=1))
        parties = [(n, r) for n, r in SERVICE_PARTIES.items()]
        parties += [(REGISTRY_ID, REGISTRY_ROLE)] + [(c, "connector") for c in ids]
        for name, role in parties:
            cert_path, key_path = self.tls_paths(name)
            if not cert_path.exists():
                leaf = issue(ca, name=name, role=role, now=when)
                write_secret(key_path, leaf.key_pem)
                write_public(cert_path, leaf.cert_pem)
        if not self.paillier_private_path.exists():
            on_create(f"Paillier key pair ({paillier_bits} bits)")
            private = generate_keypair(paillier_bits)
            write_secret(self.paillier_private_path, private.to_json().encode())
            write_public(self.paillier_public_path, private.public.to_json().encode())
        self.ensure_judgement_key()
        if not (self.root / "service" / "audit.key").exists():
            write_secret(self.root / "service" / "audit.key", secrets.token_bytes(KEY_BYTES))
        for cid in ids:
            d = self.connector_dir(cid)
            if not (d / "signing.key").exists():
                key = Ed25519PrivateKey.generate()
                write_secret(d / "signing.key", signing.private_key_to_pem(key))
                write_public(d / "signing.pub", signing.public_key_to_pem(key.public_key()))
            if not (d / "integrity.key").exists():
                write_secret(d / "integrity.key", secrets.token_bytes(KEY_BYTES))
        if not self._epoch_path.exists():
            on_create("token authority keys (OPRF, epoch 1)")
            self._new_oprf_key(1)
            write_public(self._epoch_path, b"1\n")
        if not (self._ta / "grant.key").exists():
            key = Ed25519PrivateKey.generate()
            write_secret(self._ta / "grant.key", signing.private_key_to_pem(key))
            write_public(self._ta / "grant.pub", signing.public_key_to_pem(key.public_key()))
        if not (self.root / "log" / "log.key").exists():
            key = Ed25519PrivateKey.generate()
            write_secret(self.root / "log" / "log.key", signing.private_key_to_pem(key))
            write_public(self.root / "log" / "log.pub", signing.public_key_to_pem(key.public_key()))
        write_public(ca_cert, ca.cert_pem)  # last: its presence marks a complete key set

    # -- one party's own directory (enrolment) ---------------------------------------------
    def request_certificate(self, name: str, role: str, hosts: Iterable[str] = ()) -> Path:
        """Make this party's TLS key here and a signing request beside it (``tls/<name>.csr``,
        the only file that goes to the CA); the request's path. A key that has no
        certificate yet is replaced; one with a certificate is refused."""
        cert_path, key_path = self.tls_paths(name)
        if cert_path.exists():
            raise CryptoError(
                f"{cert_path} exists: {name} is enrolled; revoke its certificate at the CA "
                "and remove it before requesting a new one"
            )
        made = request(name, role, tuple(hosts))
        write_secret(key_path, made.key_pem)
        csr = cert_path.with_suffix(".csr")
        write_public(csr, made.cert_pem)
        return csr

    def install_certificate(
        self,
        name: str,
        cert_pem: bytes,
        ca_pem: bytes,
        *,
        crl_pem: bytes | None = None,
        crl_where: str = "the revocation list given",
        replace_ca: bool = False,
        now: dt.datetime | None = None,
    ) -> PeerIdentity:
        """Install the certificate the CA signed for this party's request, the CA's own
        certificate and (optionally) its revocation list; refused when the certificate is not
        for this party's key or not from that CA, when the list is not that CA's or older than
        one the party recorded (``crl.number``) or holds (``crl.pem``), and when the directory
        already trusts another CA (unless ``replace_ca``: a re-keyed deployment)."""
        cert_path, key_path = self.tls_paths(name)
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            ca = x509.load_pem_x509_certificate(ca_pem)
        except ValueError:
            raise CryptoError("not a PEM certificate") from None
        key = serialization.load_pem_private_key(read_secret(key_path), password=None)
        if cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise CryptoError(f"the certificate is not for the key in {key_path}")
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            raise CryptoError("the certificate was not issued by the CA given") from None
        who = identity_from_pem(cert_pem)
        if who.name != name:
            raise CryptoError(f"the certificate names {who.name!r}, not {name!r}")
        trusted = self.root / "ca.pem"
        if not replace_ca and trusted.exists() and not _same_certificate(trusted, ca):
            raise CryptoError(
                f"{trusted} is another CA's certificate; a party trusts one CA. If this "
                "deployment's CA was replaced, install again with --replace-ca"
            )
        floor = self.root / "crl.number"
        if crl_pem is not None:  # checked before anything is written
            # never older than the newest this party recorded or holds: a list copied in by
            # hand after a revocation is recorded only when a server next reads it
            number = check_revocation_list(
                ca_pem,
                crl_pem,
                crl_where,
                now=now,
                floor_path=floor,
                held_path=self.root / "crl.pem",
            ).number
        self.receive("ca.pem", ca_pem)
        if crl_pem is not None:
            self.receive("crl.pem", crl_pem)
            record_accepted(floor, number)
        write_public(cert_path, cert_pem)
        cert_path.with_suffix(".csr").unlink(missing_ok=True)
        return who

    def create_own_keys(
        self,
        party: str,
        role: str,
        *,
        paillier_bits: int = DEFAULT_KEY_BITS,
        on_create: Callable[[str], None] = lambda _: None,
    ) -> None:
        """The secrets a party makes for itself, in its own directory: the custodian its
        Paillier key pair; the service its audit key and the log's signing key; the registry
        the token authority's keys; a connector its answer-signing and integrity keys. Keys
        that exist are kept."""
        if role == "custodian" and not self.paillier_private_path.exists():
            on_create(f"Paillier key pair ({paillier_bits} bits) for {party}")
            private = generate_keypair(paillier_bits)
            write_secret(self.paillier_private_path, private.to_json().encode())
            write_public(self.paillier_public_path, private.public.to_json().encode())
        if role == "custodian":
            self.ensure_judgement_key()
        if role == "service":
            if not (self.root / "service" / "audit.key").exists():
                write_secret(self.root / "service" / "audit.key", secrets.token_bytes(KEY_BYTES))
            self.write_shared_audit_token_key()
            _signing_pair(self.root / "log" / "log.key", self.root / "log" / "log.pub")
        if role in (REGISTRY_ROLE, "connector") and party == REGISTRY_ID:
            if not self._epoch_path.exists():
                on_create("token authority keys (OPRF, epoch 1)")
                self._new_oprf_key(1)
                write_public(self._epoch_path, b"1\n")
            _signing_pair(self._ta / "grant.key", self._ta / "grant.pub")
        elif role == "connector":
            d = self.connector_dir(party)
            _signing_pair(d / "signing.key", d / "signing.pub")
            if not (d / "integrity.key").exists():
                write_secret(d / "integrity.key", secrets.token_bytes(KEY_BYTES))

    def trust(self, source: KeyDir, relative: Path) -> None:
        """Copy one public file of another party into this directory (what an operator
        does with the files another party's operator sends)."""
        if relative.suffix == ".key":
            raise CryptoError(f"{relative} is a private key; parties exchange public files only")
        self.receive(relative, read_public(source.root / relative))

    def receive(self, relative: Path | str, data: bytes) -> None:
        """Put a public file received from elsewhere (another party's key, the CA's
        certificate or revocation list) in its place, in one step, when it changed."""
        target = self.root / relative
        if not target.exists() or target.read_bytes() != data:
            replace_public(target, data)

    def required(self, connector_ids: Iterable[str]) -> list[Path]:
        """Every file of a complete key set for these connectors."""
        paths = [self.root / "ca.pem", self.root / "ca.key"]
        for name in [*SERVICE_PARTIES, REGISTRY_ID, *connector_ids]:
            paths += self.tls_paths(name)
        paths += [self.paillier_private_path, self.paillier_public_path]
        paths += [self.root / "service" / "audit.key"]
        paths += [self.root / "log" / "log.key", self.root / "log" / "log.pub"]
        paths += [self._epoch_path, self._ta / "grant.key", self._ta / "grant.pub"]
        for cid in connector_ids:
            paths += [
                self.connector_dir(cid) / "signing.key",
                self.connector_dir(cid) / "signing.pub",
            ]
        return paths

    def check(self, connector_ids: Iterable[str]) -> None:
        """Refuse an incomplete key set, naming every missing file and what to do."""
        ids = list(connector_ids)
        missing = [p for p in self.required(ids) if not p.exists()]
        if self._epoch_path.exists():
            oprf_key = self._ta / f"oprf-{self.token_epoch()}.key"
            if not oprf_key.exists():
                missing.append(oprf_key)
        if missing:
            raise KeyFileError(
                f"{self.root} is an existing key set, but {len(missing)} file(s) are missing: "
                + ", ".join(str(p.relative_to(self.root)) for p in missing[:8])
                + (" …" if len(missing) > 8 else "")
                + ". Restore them from your backup. hedui creates keys only in an empty key "
                "directory (`hedui keys init`) or by an explicit rotation (`hedui keys rotate "
                "--tokens` for the token key), never silently: "
                + _WHY.get(missing[0].name, "a replaced key would not match what others pinned")
            )

    # -- loading -------------------------------------------------------------------------
    def tls(self, name: str, now: dt.datetime | None = None) -> TlsMaterial:
        """The party's certificate, key and CA; refused when this machine's clock lies outside
        the certificate's validity (TLS would fail with 'certificate is not yet valid')."""
        cert, key = self.tls_paths(name)
        pem = read_public(cert)
        try:
            parsed = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise KeyFileError(f"{cert} is damaged; restore it from your backup") from None
        when = now or dt.datetime.now(dt.UTC)
        if when < parsed.not_valid_before_utc:
            raise KeyFileError(
                f"this machine's clock says {when:%Y-%m-%d %H:%M} UTC, before {cert} becomes "
                f"valid ({parsed.not_valid_before_utc:%Y-%m-%d %H:%M} UTC): TLS would fail with "
                "'certificate is not yet valid'. Fix the clock (NTP)"
            )
        if when > parsed.not_valid_after_utc:
            raise KeyFileError(
                f"{cert} expired on {parsed.not_valid_after_utc:%Y-%m-%d}; issue new certificates"
            )
        # the CA's revocation list, as its operator last copied it here (checked on each call)
        crl = self.root / "crl.pem"
        return TlsMaterial(read_public(self.root / "ca.pem"), pem, read_secret(key), crl)

    def paillier_public(self) -> PublicKey:
        path = self.paillier_public_path
        return _parsed(path, lambda: PublicKey.from_json(read_public(path).decode()))

    def paillier_private(self) -> PrivateKey:
        path = self.paillier_private_path
        return _parsed(path, lambda: PrivateKey.from_json(read_secret(path).decode()))

    # -- the token authority -------------------------------------------------------------
    @property
    def _ta(self) -> Path:
        return self.root / "token-authority"

    @property
    def _epoch_path(self) -> Path:
        return self._ta / "epoch"

    def _new_oprf_key(self, epoch: int) -> None:
        from hedui.core import oprf  # libsodium loads only in the processes that need it

        write_secret(self._ta / f"oprf-{epoch}.key", oprf.ServerKey.generate().private_key)

    def token_epoch(self) -> int:
        text = read_public(self._epoch_path).decode().strip()
        if not text.isdigit() or int(text) < 1:
            raise KeyFileError(f"{self._epoch_path}: not a token epoch ({text[:20]!r})")
        return int(text)

    def rotate_token_epoch(self) -> int:
        """Start a new token epoch: a new OPRF key; the old one stays for the record."""
        epoch = self.token_epoch() + 1
        self._new_oprf_key(epoch)
        self._epoch_path.unlink()
        write_public(self._epoch_path, f"{epoch}\n".encode())
        return epoch

    def oprf_key(self, epoch: int) -> ServerKey:
        from hedui.core import oprf

        path = self._ta / f"oprf-{epoch}.key"
        return _parsed(path, lambda: oprf.ServerKey(read_secret(path)))

    def grant_signing_key(self) -> Ed25519PrivateKey:
        return _private(self._ta / "grant.key")

    def grant_verify_key(self) -> Ed25519PublicKey:
        return _public(self._ta / "grant.pub")

    def service_secret(self) -> bytes:
        """The service's own secret (the audit key's bytes), from which it derives the key that
        seals the verdicts it keeps (see hedui.server.requests.StateSealer)."""
        return read_secret(self.root / "service" / "audit.key")

    def audit_token_key(self) -> TokenKey:
        path = self.root / "service" / "audit.key"
        return _parsed(path, lambda: audit_token_key(read_secret(path)))

    @property
    def shared_audit_token_path(self) -> Path:
        """The audit token key as the service shares it with the registry (a secret)."""
        return self.root / "service" / "audit-token.key"

    def write_shared_audit_token_key(self) -> Path:
        """The service writes the key its audit tokens are made with, for the registry's
        operator (the audit key itself, which also seals the service's state, stays)."""
        path = self.shared_audit_token_path
        key = self.audit_token_key().key
        if not path.exists() or read_secret(path) != key:
            write_secret(path, key)
        return path

    def registry_audit_token_key(self) -> TokenKey:
        """The audit token key the registry binds grants with: the file the service's operator
        sent (``service/audit-token.key``), or in a key directory that holds the service's own
        keys (a development deployment), derived from them."""
        path = self.shared_audit_token_path
        if not path.exists() and (self.root / "service" / "audit.key").exists():
            return self.audit_token_key()
        if not path.exists():
            raise KeyFileError(
                f"{path} does not exist: copy service/audit-token.key from the verification "
                "service's key directory (a secret: over a channel you trust, mode 0600)"
            )

        def load() -> TokenKey:
            key = read_secret(path)
            if len(key) != KEY_BYTES:
                raise KeyFileError(f"{path} is damaged; copy it again from the service")
            return TokenKey(key)

        return _parsed(path, load)

    def connector_signing_key(self, connector_id: str) -> Ed25519PrivateKey:
        return _private(self.connector_dir(connector_id) / "signing.key")

    def connector_integrity_key(self, connector_id: str) -> bytes:
        """The key that seals the connector's stored figures (its own; nobody else needs it)."""
        path = self.connector_dir(connector_id) / "integrity.key"
        key = read_secret(path)
        if len(key) != KEY_BYTES:
            raise KeyFileError(f"{path} is damaged; restore it from your backup")
        return key

    def connector_verify_key(self, connector_id: str) -> Ed25519PublicKey:
        return _public(self.connector_dir(connector_id) / "signing.pub")

    def log_signing_key(self) -> Ed25519PrivateKey:
        return _private(self.root / "log" / "log.key")

    def log_public_key(self) -> Ed25519PublicKey:
        return _public(self.root / "log" / "log.pub")


_T = TypeVar("_T")

# what a replaced key would break, by file name
_WHY = {
    "audit.key": "a new audit key would make every earlier audit entry unsearchable by person",
    "log.key": "a new log key would sign another history than the one auditors verified",
    "log.pub": "auditors pinned the log's public key",
    "paillier.key": "answers are encrypted under the pinned Paillier key",
    "grant.key": "connectors and the custodian pinned the token authority's grant key",
    "epoch": "connectors' data is of the current token epoch",
    "ca.key": "every certificate was issued by this CA",
}


def _same_certificate(path: Path, cert: x509.Certificate) -> bool:
    try:
        return x509.load_pem_x509_certificate(read_public(path)) == cert
    except ValueError:
        return False  # a damaged file: not the same


def _parsed(path: Path, load: Callable[[], _T]) -> _T:
    """Load a key file; a damaged one is refused by name, never a traceback."""
    try:
        return load()
    except KeyFileError:
        raise
    except (ValueError, TypeError, KeyError, UnicodeDecodeError, CryptoError) as e:
        raise KeyFileError(
            f"{path} is damaged ({type(e).__name__}); restore it from your backup"
        ) from None


def _signing_pair(private: Path, public: Path) -> None:
    if not private.exists():
        key = Ed25519PrivateKey.generate()
        write_secret(private, signing.private_key_to_pem(key))
        write_public(public, signing.public_key_to_pem(key.public_key()))


def _private(path: Path) -> Ed25519PrivateKey:
    return _parsed(path, lambda: signing.load_private_key(read_secret(path)))


def _public(path: Path) -> Ed25519PublicKey:
    return _parsed(path, lambda: signing.load_public_key(read_public(path)))

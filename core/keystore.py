"""The key directory of a deployment: every key and certificate ``hedui keys init`` creates.

    keys/ca.pem, ca.key                 private CA of the deployment
    keys/tls/<name>.pem, <name>.key     mTLS certificate per party (service, intake, auditor,
                                        registry and every connector)
    keys/connectors/<id>/signing.key    Ed25519 answer-signing key (signing.pub beside it)
    keys/custodian/paillier.key         Paillier private key (paillier.pub beside it)
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
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hedui.core import signing
from hedui.core.errors import KeyFileError
from hedui.core.keyfiles import read_public, read_secret, write_public, write_secret
from hedui.core.paillier import DEFAULT_KEY_BITS, PrivateKey, PublicKey, generate_keypair
from hedui.core.tls import Issued, TlsMaterial, create_ca, issue
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
        """Create whatever is missing; existing keys are kept."""
        when = now or dt.datetime.now(dt.UTC)
        ca_cert, ca_key = self.root / "ca.pem", self.root / "ca.key"
        if not ca_cert.exists():
            ca = create_ca("hedui deployment CA", when)
            write_secret(ca_key, ca.key_pem)
            write_public(ca_cert, ca.cert_pem)
            on_create("certificate authority")
        ca = Issued(read_public(ca_cert), read_secret(ca_key))
        ids = list(connector_ids)
        parties = [(n, r) for n, r in SERVICE_PARTIES.items()]
        parties += [(REGISTRY_ID, "connector")] + [(c, "connector") for c in ids]
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
        if not (self.root / "service" / "audit.key").exists():
            write_secret(self.root / "service" / "audit.key", secrets.token_bytes(KEY_BYTES))
        for cid in ids:
            d = self.connector_dir(cid)
            if not (d / "signing.key").exists():
                key = Ed25519PrivateKey.generate()
                write_secret(d / "signing.key", signing.private_key_to_pem(key))
                write_public(d / "signing.pub", signing.public_key_to_pem(key.public_key()))
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

    # -- loading -------------------------------------------------------------------------
    def tls(self, name: str) -> TlsMaterial:
        cert, key = self.tls_paths(name)
        return TlsMaterial(read_public(self.root / "ca.pem"), read_public(cert), read_secret(key))

    def paillier_public(self) -> PublicKey:
        return PublicKey.from_json(read_public(self.paillier_public_path).decode())

    def paillier_private(self) -> PrivateKey:
        return PrivateKey.from_json(read_secret(self.paillier_private_path).decode())

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

        return oprf.ServerKey(read_secret(self._ta / f"oprf-{epoch}.key"))

    def grant_signing_key(self) -> Ed25519PrivateKey:
        return signing.load_private_key(read_secret(self._ta / "grant.key"))

    def grant_verify_key(self) -> Ed25519PublicKey:
        return signing.load_public_key(read_public(self._ta / "grant.pub"))

    def audit_token_key(self) -> TokenKey:
        return audit_token_key(read_secret(self.root / "service" / "audit.key"))

    def connector_signing_key(self, connector_id: str) -> Ed25519PrivateKey:
        return signing.load_private_key(
            read_secret(self.connector_dir(connector_id) / "signing.key")
        )

    def connector_verify_key(self, connector_id: str) -> Ed25519PublicKey:
        return signing.load_public_key(
            read_public(self.connector_dir(connector_id) / "signing.pub")
        )

    def log_signing_key(self) -> Ed25519PrivateKey:
        return signing.load_private_key(read_secret(self.root / "log" / "log.key"))

    def log_public_key(self) -> Ed25519PublicKey:
        return signing.load_public_key(read_public(self.root / "log" / "log.pub"))

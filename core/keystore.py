"""The key directory of a deployment: every key and certificate ``hedui keys init`` creates.

    keys/ca.pem, ca.key                 private CA of the deployment
    keys/tls/<name>.pem, <name>.key     mTLS certificate per party (service, intake, auditor,
                                        registry and every connector)
    keys/connectors/<id>/signing.key    Ed25519 answer-signing key (signing.pub beside it)
    keys/connectors/<id>/token.key      the connector's token key (HKDF of the master)
    keys/custodian/paillier.key         Paillier private key (paillier.pub beside it)
    keys/service/token-master.key       token master key; audit.key for audit tokens
    keys/log/log.key                    Ed25519 checkpoint-signing key (log.pub beside it)

Secret files are 0600 and refused when others may read them. ``init`` only adds what is
missing, so running it again reuses every existing key.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hedui.core import signing
from hedui.core.keyfiles import read_public, read_secret, write_public, write_secret
from hedui.core.paillier import DEFAULT_KEY_BITS, PrivateKey, PublicKey, generate_keypair
from hedui.core.tls import Issued, TlsMaterial, create_ca, issue
from hedui.core.tokens import KEY_BYTES, TokenKey, TokenMaster, audit_token_key

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
        master_path = self.root / "service" / "token-master.key"
        for path in (master_path, self.root / "service" / "audit.key"):
            if not path.exists():
                write_secret(path, secrets.token_bytes(KEY_BYTES))
        master = TokenMaster(read_secret(master_path))
        for cid in ids:
            d = self.connector_dir(cid)
            if not (d / "signing.key").exists():
                key = Ed25519PrivateKey.generate()
                write_secret(d / "signing.key", signing.private_key_to_pem(key))
                write_public(d / "signing.pub", signing.public_key_to_pem(key.public_key()))
            if not (d / "token.key").exists():
                write_secret(d / "token.key", master.for_connector(cid).key)
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

    def token_master(self, epoch: int = 1) -> TokenMaster:
        return TokenMaster(read_secret(self.root / "service" / "token-master.key"), epoch)

    def audit_token_key(self) -> TokenKey:
        return audit_token_key(read_secret(self.root / "service" / "audit.key"))

    def connector_token_key(self, connector_id: str) -> TokenKey:
        return TokenKey(read_secret(self.connector_dir(connector_id) / "token.key"))

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

"""The audit log: append entries, sign checkpoints, serve receipts and proofs.

The log signs a checkpoint after each append (or batch). Before it signs, it proves to itself
that the new tree is consistent with the latest checkpoint it ever signed, so it never signs
two checkpoints that contradict each other, even if someone has altered its database.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hedui.audit import merkle
from hedui.audit.checkpoint import Checkpoint, parse_and_verify, sign_checkpoint
from hedui.audit.errors import AuditError, VerificationError
from hedui.audit.store import CALLER_CHARS, LogStore, SearchKeys
from hedui.core import metrics
from hedui.proto.v1 import audit_pb2

DEFAULT_ORIGIN = "hedui.example/demo-log"  # a log configured without one (before hedui 0.2)


def new_origin() -> str:
    """A fresh origin for a new deployment's log, ``hedui.local/<8 random hex>-log``: each log
    has an origin of its own, so an auditor keeps each one's state apart (a new deployment is
    a new log, not a replaced key)."""
    return f"hedui.local/{secrets.token_hex(4)}-log"


def key_name(origin: str) -> str:
    """The checkpoint key's name: the log's origin (C2SP tlog-checkpoint: the key name SHOULD
    match the origin), so a generic note verifier finds the key by the checkpoint's first line."""
    return origin


def entry_bytes(entry: audit_pb2.AuditEntry) -> bytes:
    """The canonical bytes of an entry: deterministic protobuf serialisation."""
    return entry.SerializeToString(deterministic=True)


def search_keys(entry: audit_pb2.AuditEntry) -> SearchKeys:
    body = entry.WhichOneof("body")
    token = None
    caller = entry.caller
    if body in ("request", "verdict", "search", "monitoring"):
        token = getattr(entry, body).applicant_audit_token or None
    if body in ("request", "verdict") and getattr(entry, body).caseworker_id:
        # "<caller>/<caseworker>": found by a search for the intake system or for the caseworker
        caller = f"{caller}/{getattr(entry, body).caseworker_id}"[:CALLER_CHARS]
    return SearchKeys(caller=caller, time_ms=entry.time_unix_ms, applicant_token=token)


@dataclass(frozen=True)
class Receipt:
    leaf_index: int
    checkpoint: bytes
    inclusion_proof: tuple[bytes, ...]


class AuditLog:
    def __init__(
        self,
        store: LogStore,
        *,
        origin: str,
        signing_key: Ed25519PrivateKey,
    ) -> None:
        self.store = store
        self.origin = origin
        self.key_name = key_name(origin)
        self._key = signing_key
        self._lock = threading.Lock()

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def append(self, entries: Sequence[audit_pb2.AuditEntry]) -> list[Receipt]:
        """Append entries and return a receipt for each, under one fresh checkpoint."""
        appended = self.store.append([(entry_bytes(e), search_keys(e)) for e in entries])
        metrics.AUDIT_APPENDS.inc(len(entries))
        note = self.sign(appended.size)
        indexes = list(range(appended.first_index, appended.size))
        proofs = self.store.inclusion_proofs(indexes, appended.size)
        return [Receipt(i, note, tuple(p)) for i, p in zip(indexes, proofs, strict=True)]

    def read_checkpoint(self, note: bytes) -> Checkpoint:
        return parse_and_verify(note, self.key_name, self.public_key, origin=self.origin)

    def sign(self, size: int) -> bytes:
        """Sign a checkpoint of the tree at ``size`` after checking it against the latest one."""
        with self._lock:
            root = self.store.root(size)
            latest = self.store.latest_checkpoint()
            if latest is not None:
                previous = self.read_checkpoint(latest[1])
                try:
                    if previous.size == size:
                        if previous.root != root:
                            raise VerificationError(f"root mismatch at size {size}")
                        return latest[1]
                    small, big = sorted(
                        (previous, Checkpoint(self.origin, size, root)), key=lambda c: c.size
                    )
                    if small.size > 0:
                        proof = self.store.consistency_proof(small.size, big.size)
                        merkle.verify_consistency(small.size, big.size, proof, small.root, big.root)
                except VerificationError as e:
                    raise AuditError(
                        f"refusing to sign: the tree at size {size} is inconsistent with the "
                        f"checkpoint at size {previous.size} ({e}); the log database was altered"
                    ) from None
            note = sign_checkpoint(Checkpoint(self.origin, size, root), self.key_name, self._key)
            self.store.save_checkpoint(size, note)
            return note

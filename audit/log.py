"""The audit log: append entries, sign checkpoints, serve receipts and proofs.

The log signs a checkpoint after each append (or batch). Before it signs, it proves to itself
that the new tree is consistent with the latest checkpoint it ever signed, so it never signs
two checkpoints that contradict each other, even if someone has altered its database.

With witnesses (:class:`Witnessing`, issue #23), each new checkpoint is sent to them
(c2sp.org/tlog-witness) before it is stored, and stored with their ``cosignature/v1`` lines:
the parties that rely on the log (the key custodian, auditors) take only checkpoints that a
witness which is not the service cosigned, so a fork shown to one of them alone is refused. A
witness that cannot be reached leaves that checkpoint without its cosignature (the log keeps
appending); :meth:`AuditLog.witnessed_latest` asks again when a cosigned checkpoint is needed,
and says why when it cannot get one.
"""

from __future__ import annotations

import logging
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hedui.audit import merkle
from hedui.audit.checkpoint import Checkpoint, parse_and_verify, sign_checkpoint
from hedui.audit.cosignature import Cosigner, WitnessPolicy, add_cosignatures
from hedui.audit.errors import (
    AuditError,
    VerificationError,
    WitnessRefused,
    WitnessUnavailable,
)
from hedui.audit.store import CALLER_CHARS, LogStore, SearchKeys
from hedui.audit.witness_client import Connection, request_cosignature, ssl_context
from hedui.core import metrics
from hedui.core.tls import TlsMaterial
from hedui.proto.v1 import audit_pb2

log = logging.getLogger("hedui.audit")

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
class WitnessEndpoint:
    """A witness the log submits its checkpoints to: its submission prefix
    (``https://host:port[/path]``) and its verifier key."""

    url: str
    cosigner: Cosigner

    @classmethod
    def parse(cls, url: str, vkey: str) -> WitnessEndpoint:
        """``ValueError`` naming what is wrong with the URL or the vkey."""
        if not url.startswith("https://") or len(url) <= len("https://"):
            raise ValueError(f"the witness URL {url!r} is not https://host:port[/prefix]")
        return cls(url.rstrip("/"), Cosigner.from_vkey(vkey))

    def __str__(self) -> str:
        return f"the witness {self.cosigner.name} at {self.url}"


class Witnessing:
    """The log's witnesses: each new checkpoint is sent to every one of them with a consistency
    proof from the size it last cosigned (remembered here; a witness that is elsewhere answers
    409 with its size and is asked once more from there), and it needs the cosignatures of
    ``quorum`` of them. A witness that cannot be reached is not asked again for ``pause``
    seconds (its last error is given instead), so a dead witness never holds up the log for
    more than one ``timeout`` in each pause."""

    def __init__(
        self,
        endpoints: Sequence[WitnessEndpoint],
        tls: TlsMaterial | ssl.SSLContext,
        *,
        quorum: int = 1,
        timeout: float = 5.0,
        pause: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoints = tuple(endpoints)
        self.policy = WitnessPolicy(tuple(e.cosigner for e in self.endpoints), quorum)
        self._context = tls if isinstance(tls, ssl.SSLContext) else ssl_context(tls, server=False)
        self._timeout, self._pause, self._clock = timeout, pause, clock
        self._sizes = {e.url: 0 for e in self.endpoints}  # what each last cosigned, as heard
        self._down: dict[str, tuple[float, str]] = {}  # url -> (not before, why)
        self._connections = {e.url: Connection() for e in self.endpoints}  # kept alive
        self._lock = threading.Lock()
        self.round_trips = 0  # add-checkpoint requests made (for measurements)

    def close(self) -> None:
        """Close the connections kept to the witnesses."""
        with self._lock:
            for c in self._connections.values():
                c.close()

    def ahead_of(self, size: int) -> bool:
        """Whether a witness is known to have cosigned the log beyond ``size`` (another
        writer of the log, a replica, got there first: its checkpoint is about to be stored)."""
        with self._lock:
            return any(s > size for s in self._sizes.values())

    def carries_quorum(self, note: bytes) -> bool:
        """Whether ``note`` carries valid cosignatures of ``quorum`` of the witnesses."""
        try:
            self.policy.check(note)
        except VerificationError:
            return False
        return True

    def cosign(self, note: bytes, size: int, prove: Callable[[int, int], Sequence[bytes]]) -> bytes:
        """``note`` (a signed checkpoint of ``size`` entries) with the cosignatures of the
        witnesses that gave one; :class:`WitnessUnavailable` naming each witness that did not
        and why, unless ``quorum`` of them did. ``prove(old, new)`` is the log's consistency
        proof between two of its sizes."""
        with self._lock:
            lines: list[bytes] = []
            failures: list[str] = []
            for e in self.endpoints:
                got = self._ask(e, note, size, prove, failures)
                if got is not None:
                    lines.append(got)
            cosigned = add_cosignatures(note, b"".join(lines)) if lines else note
        if len(lines) >= self.policy.quorum and self.carries_quorum(cosigned):
            return cosigned
        raise WitnessUnavailable(
            f"the checkpoint at size {size} has {len(lines)} of the {self.policy.quorum} "
            f"witness cosignature(s) it needs: {'; '.join(failures)}"
        )

    def _ask(
        self,
        e: WitnessEndpoint,
        note: bytes,
        size: int,
        prove: Callable[[int, int], Sequence[bytes]],
        failures: list[str],
    ) -> bytes | None:
        now = self._clock()
        down = self._down.get(e.url)
        if down is not None and now < down[0]:
            failures.append(down[1])
            return None
        old = self._sizes[e.url]
        if old > size:
            failures.append(f"{e} has cosigned the log at size {old}, beyond {size}")
            return None

        def proof(witnessed: int) -> Sequence[bytes]:
            return [] if witnessed in (0, size) else prove(witnessed, size)

        try:
            self.round_trips += 1
            got = request_cosignature(
                e.url,
                self._context,
                old,
                proof(old),
                note,
                prove=proof,
                witness=e.cosigner,
                timeout=self._timeout,
                connection=self._connections[e.url],
            )
        except WitnessRefused as r:
            if r.size is not None:
                self._sizes[e.url] = r.size
            failures.append(f"{r} ({e.cosigner.name})")
            return None
        except WitnessUnavailable as u:  # paused from now: a timeout took its time already
            why = f"{u} ({e.cosigner.name})"
            self._down[e.url] = (self._clock() + self._pause, why)
            failures.append(why)
            return None
        self._sizes[e.url] = size
        self._down.pop(e.url, None)
        return got


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
        witnesses: Witnessing | None = None,
    ) -> None:
        self.store = store
        self.origin = origin
        self.key_name = key_name(origin)
        self._key = signing_key
        self._lock = threading.Lock()
        self.witnesses = witnesses
        # checkpoints stored before a witness cosigned them, cosigned since (size -> note)
        self._cosigned: dict[int, bytes] = {}

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
            proven: dict[tuple[int, int], list[bytes]] = {}  # what the witness is likely sent
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
                        proven[(small.size, big.size)] = proof
                except VerificationError as e:
                    raise AuditError(
                        f"refusing to sign: the tree at size {size} is inconsistent with the "
                        f"checkpoint at size {previous.size} ({e}); the log database was altered"
                    ) from None
            note = sign_checkpoint(Checkpoint(self.origin, size, root), self.key_name, self._key)
            if self.witnesses is not None:  # cosigned before it is stored (rows are immutable)

                def prove(old: int, new: int) -> list[bytes]:
                    got = proven.get((old, new))
                    return got if got is not None else self.store.consistency_proof(old, new)

                try:
                    note = self.witnesses.cosign(note, size, prove)
                except WitnessUnavailable as e:
                    log.warning(
                        "the checkpoint at size %d is stored without cosignature: %s", size, e
                    )
            self.store.save_checkpoint(size, note)
            return note

    def _consistent_with_quorum(self, size: int, note: bytes) -> bytes | None:
        """``note`` as the witnesses cosigned it, if stored so or cosigned since; else None."""
        assert self.witnesses is not None
        if self.witnesses.carries_quorum(note):
            return note
        return self._cosigned.get(size)

    def checkpoint(self, size: int) -> bytes | None:
        """The note of the checkpoint the log signed at ``size`` (with the cosignatures it got
        after it was stored, if any), or None."""
        return self._cosigned.get(size) or self.store.checkpoint_at(size)

    def cosigned_note(self, size: int) -> bytes | None:
        """The checkpoint at ``size`` carrying the witnesses' quorum, without asking them
        (as stored, or as cosigned since), or None. Without witnesses: as stored."""
        note = self.store.checkpoint_at(size)
        if note is None or self.witnesses is None:
            return note
        return self._consistent_with_quorum(size, note)

    def witnessed_latest(self) -> tuple[int, bytes]:
        """(size, note) of the latest checkpoint, cosigned by the witnesses' quorum: as stored
        when it was, else asked of them now (and remembered). :class:`WitnessUnavailable` names
        the witnesses that did not cosign it and why. Without witnesses: as stored."""
        latest = self.store.latest_checkpoint()
        if latest is None:
            size = self.store.size()
            latest = (size, self.sign(size))
        if self.witnesses is None:
            return latest
        deadline = time.monotonic() + 2.0
        while True:
            with self._lock:  # not while sign() moves a witness on
                latest = self.store.latest_checkpoint() or latest
                size, note = latest
                done = self._consistent_with_quorum(size, note)
                if done is not None:
                    return size, done
                try:
                    cosigned = self.witnesses.cosign(note, size, self.store.consistency_proof)
                except WitnessUnavailable:
                    # a replica's newer checkpoint, cosigned and about to be stored: take it
                    if not self.witnesses.ahead_of(size) or time.monotonic() > deadline:
                        raise
                    cosigned = b""
                if cosigned:
                    self._cosigned[size] = cosigned
                    while len(self._cosigned) > 64:
                        del self._cosigned[min(self._cosigned)]
                    return size, cosigned
            time.sleep(0.05)

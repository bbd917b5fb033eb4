"""Idempotency: one verdict per (caller, request id), stored without the applicant's ID.

A request id is claimed before the verification starts, so two concurrent calls with the same
id never both verify: the second is told the first is in progress. Keys and application
fingerprints are HMACs under the audit key, so the table reveals neither the request ids nor
whom they were about.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    Float,
    LargeBinary,
    String,
    create_engine,
    delete,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from hedui.core import migrations
from hedui.core.migrations import SchemaError
from hedui.server.errors import ServiceError
from hedui.server.schema import SERVICE_SCHEMA, Base

log = logging.getLogger("hedui.server.requests")
_T = TypeVar("_T")


class VerdictRecord(Base):
    __tablename__ = "verdict_record"
    request_key: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    application: Mapped[bytes] = mapped_column(LargeBinary(32))
    verdict: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # None: in progress
    claimed_at: Mapped[float] = mapped_column(Float, default=0.0)
    # the query id and the log's size just before its request entry was appended, and the
    # verdict made before it was logged: what the next start needs to settle a claim its
    # previous life left in progress
    query_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    from_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    pending: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # the service process (replica) that holds the claim; only it completes or releases it,
    # and another settles it only once that process is gone (see RequestBook.open_claims)
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)


class ConsentCase(Base):
    """Which household a case number belongs to: both keyed (an HMAC of the caller and case
    number under the audit key; the registry's household pseudonym), so the table names no one."""

    __tablename__ = "consent_case"
    case_key: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    household: Mapped[bytes] = mapped_column(LargeBinary(32))


class StateUnavailable(ServiceError):
    """The service's state database failed; the message is for people (no SQL)."""


class StateDamaged(StateUnavailable):
    """Stored state that cannot be read as written (a verdict failing its seal, a damaged
    database page): retrying does not help; the operator must restore it."""


@dataclass(frozen=True)
class Damaged:
    """A claim whose kept verdict cannot be opened: where its outcome is in the audit log."""

    query_id: str | None
    from_size: int | None


# SQLite's and PostgreSQL's words for a damaged database (not a refused or lost connection)
_DAMAGE = ("malformed", "not a database", "database corrupt")
_DAMAGE_SQLSTATES = {"XX001", "XX002"}  # data_corrupted, index_corrupted


def _driver_words(e: SQLAlchemyError) -> str:
    """What the database driver said, on one line (statements' parameters are hidden:
    ``hide_parameters``)."""
    return f"{type(e).__name__}: {getattr(e, 'orig', None) or e}".splitlines()[0]


def _is_damage(e: SQLAlchemyError) -> bool:
    orig = getattr(e, "orig", None)
    if getattr(orig, "sqlstate", None) in _DAMAGE_SQLSTATES:
        return True
    return any(w in str(orig or e).lower() for w in _DAMAGE)


class StateSealer:
    """Verdicts at rest: AES-256-GCM under a key derived (HKDF-SHA256) from the service's audit
    key, bound to the row's request key. A file copied off the machine shows no figure; a
    verdict moved to another row, altered, or written there unsealed fails to open."""

    MARK = b"\x01"

    def __init__(self, service_key: bytes) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"hedui/service-state/v1"
        ).derive(service_key)
        self._aead = AESGCM(key)

    def seal(self, request_key: bytes, data: bytes) -> bytes:
        nonce = os.urandom(12)
        return self.MARK + nonce + self._aead.encrypt(nonce, data, request_key)

    def open(self, request_key: bytes, stored: bytes) -> bytes:
        try:
            if not stored.startswith(self.MARK):  # never written by the service: refused
                raise InvalidTag
            return self._aead.decrypt(stored[1:13], stored[13:], request_key)
        except InvalidTag:
            log.error("a stored verdict fails its integrity check (altered or moved)")
            raise StateDamaged(
                "a stored verdict of this request fails its integrity check; the operator must "
                "look at the service's state database (the decision is in the audit log)"
            ) from None


def is_purged(verdict: Any) -> bool:
    """A kept verdict whose figures retention removed (every decided verdict has an opening)."""
    return bool(verdict.decision) and not verdict.figures_opening


def without_figures(verdict_bytes: bytes) -> bytes:
    """What retention keeps of a verdict: the decision, each rule's outcome and the audit
    receipt; no benefit, figure, threshold, message or opening."""
    from hedui.proto.v1 import verification_pb2

    v = verification_pb2.Verdict.FromString(verdict_bytes)
    v.benefit_fen = 0
    v.ClearField("members")
    v.ClearField("figures_opening")  # its absence marks a purged verdict (see is_purged)
    for r in v.rules:
        for name in ("value", "threshold", "message_zh", "message_en", "figures"):
            r.ClearField(name)
    return v.SerializeToString(deterministic=True)


@dataclass(frozen=True)
class OpenClaim:
    """A claim without a verdict: its query id and where in the log its request entry would be
    (None: the verification never began), and the verdict made before the crash, if any."""

    request_key: bytes
    query_id: str | None
    from_size: int | None
    pending: bytes | None


def _guarded(method: Callable[..., _T]) -> Callable[..., _T]:
    """Storage failures become :class:`StateUnavailable` with a message for people."""

    @functools.wraps(method)
    def run(self: RequestBook, *args: Any, **kwargs: Any) -> _T:
        try:
            return method(self, *args, **kwargs)
        except StateUnavailable:
            self.failed = True
            raise
        except SQLAlchemyError as e:
            self.failed = True
            why = _driver_words(e)
            log.error("state database error in %s: %s", method.__name__, why)
            if _is_damage(e):
                raise StateDamaged(
                    f"the service's state database is damaged ({why}); the operator must "
                    "restore it (every decision is in the audit log)"
                ) from None
            raise StateUnavailable(
                "the service's state database is not available; nothing was decided, retry later"
            ) from None

    return run


def _lock_key(owner: str) -> int:
    """The PostgreSQL advisory lock (a signed 64-bit key) a replica holds while it lives."""
    return int.from_bytes(
        hashlib.sha256(b"hedui-owner\0" + owner.encode()).digest()[:8], "big", signed=True
    )


class RequestBook:
    """Claims of request ids, shared by every replica of the service on one database.

    Each process claims as ``owner`` (a fresh id per process). On PostgreSQL it holds an
    advisory lock named after its owner id for its whole life, on a connection of its own: when
    the process dies, PostgreSQL drops the lock with the connection, and another replica may
    then settle its claims (:meth:`open_claims`). On SQLite (one service process) every other
    owner is a previous life of the service. ``lease_seconds``: a claim still without a verdict
    after that long is taken over by the next caller with the same id (the audit log then shows
    both attempts)."""

    def __init__(
        self,
        url: str,
        *,
        lease_seconds: float = 600.0,
        clock: Callable[[], float] = time.time,
        sealer: StateSealer | None = None,
        owner: str | None = None,
    ) -> None:
        self._engine: Engine = create_engine(url, hide_parameters=True)
        self._postgres = self._engine.dialect.name == "postgresql"
        try:  # replicas starting together on an empty database: one creates the schema
            with self._engine.begin() as conn:
                migrations.ensure(conn, SERVICE_SCHEMA)
        except SchemaError as e:
            raise StateUnavailable(str(e)) from None
        self._lease = lease_seconds
        self._clock = clock
        self._sealer = sealer
        self.owner = owner or uuid.uuid4().hex
        self._life: Connection | None = None
        # set by any failed operation, cleared by a successful write probe (see probe_write)
        self.failed = False
        if self._postgres:
            self._life = self._engine.connect()
            self._life.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _lock_key(self.owner)})
            self._life.commit()

    def holds_its_lock(self) -> bool:
        """Whether this process still holds its owner lock (always, on SQLite). False once
        PostgreSQL dropped the connection (a restart, a terminated backend): other replicas may
        then settle this process's claims, so it must stop."""
        if self._life is None:
            return not self._postgres
        try:
            held = self._life.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND pid = pg_backend_pid() AND objid::bigint = (CAST(:k AS bigint) & 4294967295)"
                ),
                {"k": _lock_key(self.owner)},
            ).scalar()
            self._life.commit()
            return bool(held)
        except SQLAlchemyError:
            return False

    def probe_write(self) -> bool:
        """Whether the state database takes a write now: a row inserted and deleted in one
        transaction (a real write of its pages, leaving nothing behind)."""
        probe = b"\0" * 32  # never a request key: those are HMACs
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    insert(VerdictRecord).values(
                        request_key=probe, application=b"", claimed_at=0.0, owner="probe"
                    )
                )
                conn.execute(delete(VerdictRecord).where(VerdictRecord.request_key == probe))
        except SQLAlchemyError as e:
            log.error("the state database refuses writes: %s", _driver_words(e))
            self.failed = True
            return False
        self.failed = False
        return True

    @property
    def engine(self) -> Engine:
        """The state database (the watch-list and alerts live there too)."""
        return self._engine

    def close(self) -> None:
        if self._life is not None:
            self._life.close()
            self._life = None
        self._engine.dispose()

    def _gone(self, owner: str | None) -> bool:
        """Whether the process that claimed as ``owner`` no longer runs."""
        if owner == self.owner:
            return False
        if owner is None or not self._postgres:
            return True
        with self._engine.connect() as conn:
            k = _lock_key(owner)
            free = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": k}).scalar())
            if free:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": k})
            conn.commit()
        return free

    def _seal(self, key: bytes, data: bytes) -> bytes:
        return data if self._sealer is None else self._sealer.seal(key, data)

    def _open(self, key: bytes, stored: bytes | None) -> bytes | None:
        if stored is None:
            return None
        return bytes(stored) if self._sealer is None else self._sealer.open(key, bytes(stored))

    def _take(self, request_key: bytes, *conditions: Any, **values: Any) -> bool:
        """Make an open claim this process's when ``condition`` still holds (one statement,
        so two processes never both take it); whether it was taken."""
        with self._engine.begin() as conn:
            taken = conn.execute(
                update(VerdictRecord)
                .where(
                    VerdictRecord.request_key == request_key,
                    VerdictRecord.verdict.is_(None),
                    *conditions,
                )
                .values(owner=self.owner, **values)
            ).rowcount
        return bool(taken)

    def _take_over(self, request_key: bytes) -> bool:
        """Take over an abandoned claim (in progress for longer than the lease) that never began
        (no query id): one that began may have its request entry in the log, and is settled
        from the log instead (see :meth:`own_claims`, :meth:`open_claims`), so that entry gets
        its outcome."""
        now = self._clock()
        return self._take(
            request_key,
            VerdictRecord.claimed_at < now - self._lease,
            VerdictRecord.query_id.is_(None),
            claimed_at=now,
        )

    @_guarded
    def claim(self, request_key: bytes, application: bytes) -> tuple[bytes, bytes | None] | None:
        """Claim a request id. None: it is ours to verify. Otherwise the earlier claim's
        (application fingerprint, verdict bytes or None while it is in progress)."""
        row = self._claim_row(request_key, application)
        return None if row is None else (row[0], self._open(request_key, row[1]))

    def _claim_row(
        self, request_key: bytes, application: bytes
    ) -> tuple[bytes, bytes | None, str | None, Any] | None:
        """:meth:`claim`, with the earlier claim's row as stored: (application fingerprint,
        sealed verdict or None, query id, log size at its start)."""
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    insert(VerdictRecord).values(
                        request_key=request_key,
                        application=application,
                        claimed_at=self._clock(),
                        owner=self.owner,
                    )
                )
            return None
        except IntegrityError:
            with self._engine.connect() as conn:
                row = conn.execute(
                    select(
                        VerdictRecord.application,
                        VerdictRecord.verdict,
                        VerdictRecord.query_id,
                        VerdictRecord.from_size,
                    ).where(VerdictRecord.request_key == request_key)
                ).first()
            if row is None:  # released in between: try once more
                return self._claim_row(request_key, application)
            if row[1] is None and bytes(row[0]) == application and self._take_over(request_key):
                return None
            return bytes(row[0]), row[1], row[2], row[3]

    @_guarded
    def lookup(self, request_key: bytes) -> tuple[bool, bytes | None]:
        """A request id's state without claiming it: (known, verdict bytes or None while it
        is being verified). (False, None): no request with this key."""
        with self._engine.connect() as conn:
            row = conn.execute(
                select(VerdictRecord.verdict).where(VerdictRecord.request_key == request_key)
            ).first()
        if row is None:
            return False, None
        return True, self._open(request_key, row[0])

    @_guarded
    def bind_case(self, case_key: bytes, household: bytes) -> bool:
        """Bind a case number to its household on first use; False when it is bound to another."""
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(ConsentCase).values(case_key=case_key, household=household))
            return True
        except IntegrityError:
            with self._engine.connect() as conn:
                bound = conn.execute(
                    select(ConsentCase.household).where(ConsentCase.case_key == case_key)
                ).scalar_one()
            return bytes(bound) == household

    @_guarded
    def bound_cases(self, case_keys: Sequence[bytes]) -> set[bytes]:
        """Which of these case keys are bound to a household already, in one query."""
        if not case_keys:
            return set()
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(ConsentCase.case_key).where(ConsentCase.case_key.in_(list(case_keys)))
            )
            return {bytes(k) for (k,) in rows}

    def _kept(
        self, key: bytes, application: bytes, stored: bytes | None, query_id: str | None, size: Any
    ) -> tuple[bytes, bytes | None] | Damaged:
        try:
            return application, self._open(key, stored)
        except StateDamaged:
            return Damaged(query_id, None if size is None else int(size))

    @_guarded
    def claim_many(
        self, items: Sequence[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes | None] | Damaged | None]:
        """:meth:`claim` for many request ids, in one transaction when none races with another;
        a kept verdict that cannot be opened is that request's :class:`Damaged`, not all's."""
        keys = [k for k, _ in items]
        try:
            with self._engine.begin() as conn:
                rows = conn.execute(
                    select(
                        VerdictRecord.request_key,
                        VerdictRecord.application,
                        VerdictRecord.verdict,
                        VerdictRecord.query_id,
                        VerdictRecord.from_size,
                    ).where(VerdictRecord.request_key.in_(keys))
                ).all()
                earlier = {
                    bytes(k): self._kept(bytes(k), bytes(a), v, q, n) for k, a, v, q, n in rows
                }
                now = self._clock()
                new = [
                    {"request_key": k, "application": a, "claimed_at": now, "owner": self.owner}
                    for k, a in items
                    if k not in earlier
                ]
                if new:
                    conn.execute(insert(VerdictRecord), new)
            out: list[tuple[bytes, bytes | None] | Damaged | None] = []
            for k, a in items:
                e = earlier.get(k)
                if isinstance(e, tuple) and e[1] is None and e[0] == a and self._take_over(k):
                    e = None
                out.append(e)
            return out
        except IntegrityError:  # a concurrent claim of one of them: one at a time then
            return [self._claim_one(k, a) for k, a in items]

    def _claim_one(
        self, request_key: bytes, application: bytes
    ) -> tuple[bytes, bytes | None] | Damaged | None:
        row = self._claim_row(request_key, application)
        return None if row is None else self._kept(request_key, *row)

    def _set_each(
        self, items: Sequence[tuple[bytes, dict[str, Any]]], *, mine: bool = True
    ) -> None:
        """Update each claim's columns, in one transaction; ``mine``: only claims this process
        holds (one another replica took over is left to it)."""
        with self._engine.begin() as conn:
            for key, values in items:
                where = [VerdictRecord.request_key == key]
                if mine:
                    where.append(VerdictRecord.owner == self.owner)
                conn.execute(update(VerdictRecord).where(*where).values(**values))

    @_guarded
    def complete_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        self._set_each([(key, {"verdict": self._seal(key, verdict)}) for key, verdict in items])

    @_guarded
    def complete(self, request_key: bytes, verdict: bytes) -> None:
        self._set_each([(request_key, {"verdict": self._seal(request_key, verdict)})])

    @_guarded
    def purge(self, older_than: float) -> int:
        """Retention: the verdicts claimed before ``older_than`` keep their decision, rule
        outcomes and audit receipt, never their figures (the log keeps its commitments); how
        many were purged. A purged row is marked by an empty ``pending``."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(VerdictRecord.request_key, VerdictRecord.verdict).where(
                    VerdictRecord.verdict.is_not(None),
                    VerdictRecord.claimed_at < older_than,
                    or_(VerdictRecord.pending.is_(None), VerdictRecord.pending != b""),
                )
            ).all()
        items = []
        for key, stored in rows:
            try:
                verdict = self._open(bytes(key), stored)
            except StateUnavailable:  # one damaged row: named in the log, the others purged
                log.error(
                    "retention: a kept verdict fails its integrity check; left for the operator"
                )
                continue
            assert verdict is not None
            stripped = self._seal(bytes(key), without_figures(verdict))
            items.append((bytes(key), {"verdict": stripped, "pending": b""}))
        if items:
            self._set_each(items, mine=False)
        return len(items)

    @_guarded
    def release(self, request_key: bytes) -> None:
        """Give a claimed id back after a failure, so the caller may retry with it."""
        with self._engine.begin() as conn:
            conn.execute(
                delete(VerdictRecord).where(
                    VerdictRecord.request_key == request_key,
                    VerdictRecord.verdict.is_(None),
                    VerdictRecord.owner == self.owner,
                )
            )

    @_guarded
    def begin(self, items: Sequence[tuple[bytes, str, int]]) -> None:
        """Before the request entries are appended: each claim's query id and the log's size."""
        self._set_each([(key, {"query_id": q, "from_size": size}) for key, q, size in items])

    @_guarded
    def pending(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        """Keep each verdict before its entry is appended to the log: if the process dies in
        between, the next start answers the request from it (the log then holds the verdict)."""
        self._set_each([(key, {"pending": self._seal(key, verdict)}) for key, verdict in items])

    @_guarded
    def own_claims(self) -> list[OpenClaim]:
        """This process's claims still in progress (the caller knows which are in flight)."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(
                    VerdictRecord.request_key,
                    VerdictRecord.query_id,
                    VerdictRecord.from_size,
                    VerdictRecord.pending,
                ).where(VerdictRecord.verdict.is_(None), VerdictRecord.owner == self.owner)
            ).all()
        return [
            OpenClaim(bytes(k), q, None if n is None else int(n), self._pending(bytes(k), p))
            for k, q, n, p in rows
        ]

    def _pending(self, key: bytes, stored: bytes | None) -> bytes | None:
        """A kept verdict for settling; one that fails its seal is as if never kept (its
        request is then settled as abandoned, or released), not a stop to every other."""
        try:
            return self._open(key, stored)
        except StateDamaged:
            return None

    @_guarded
    def open_claims(self) -> list[OpenClaim]:
        """The claims still in progress whose process is gone (a previous life of this service,
        or a replica that died), each adopted by this process so that no two replicas settle
        the same one."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(
                    VerdictRecord.request_key,
                    VerdictRecord.query_id,
                    VerdictRecord.from_size,
                    VerdictRecord.pending,
                    VerdictRecord.owner,
                ).where(
                    VerdictRecord.verdict.is_(None),
                    or_(VerdictRecord.owner.is_(None), VerdictRecord.owner != self.owner),
                )
            ).all()
        gone = {o: self._gone(o) for o in {r[4] for r in rows}}
        out = []
        for k, q, size, p, owner in rows:
            still_theirs = (
                VerdictRecord.owner.is_(None) if owner is None else VerdictRecord.owner == owner
            )
            if gone[owner] and self._take(k, still_theirs):
                out.append(
                    OpenClaim(
                        bytes(k), q, None if size is None else int(size), self._pending(bytes(k), p)
                    )
                )
        return out

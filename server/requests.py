"""Idempotency: one verdict per (caller, request id), stored without the applicant's ID.

A request id is claimed before the verification starts, so two concurrent calls with the same
id never both verify: the second is told the first is in progress. Keys and application
fingerprints are HMACs under the audit key, so the table reveals neither the request ids nor
whom they were about.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Engine,
    Float,
    LargeBinary,
    String,
    create_engine,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from hedui.server.errors import ServiceError

log = logging.getLogger("hedui.server.requests")
_T = TypeVar("_T")


class Base(DeclarativeBase):
    pass


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


class StateUnavailable(ServiceError):
    """The service's state database failed; the message is for people (no SQL)."""


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
    def run(*args: Any, **kwargs: Any) -> _T:
        try:
            return method(*args, **kwargs)
        except SQLAlchemyError as e:
            log.error("state database error: %s", type(e).__name__)
            raise StateUnavailable(
                "the service's state database is not available; nothing was decided, retry later"
            ) from None

    return run


class RequestBook:
    """``lease_seconds``: a claim still without a verdict after that long belongs to a process
    that died mid-verification; the next caller with the same id takes it over (the audit log
    then shows both attempts)."""

    def __init__(
        self, url: str, *, lease_seconds: float = 600.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._engine: Engine = create_engine(url, hide_parameters=True)
        Base.metadata.create_all(self._engine)
        self._lease = lease_seconds
        self._clock = clock

    def _take_over(self, request_key: bytes) -> bool:
        """Take over an abandoned claim (in progress for longer than the lease)."""
        now = self._clock()
        with self._engine.begin() as conn:
            taken = conn.execute(
                update(VerdictRecord)
                .where(
                    VerdictRecord.request_key == request_key,
                    VerdictRecord.verdict.is_(None),
                    VerdictRecord.claimed_at < now - self._lease,
                )
                .values(claimed_at=now)
            ).rowcount
        return bool(taken)

    @_guarded
    def claim(self, request_key: bytes, application: bytes) -> tuple[bytes, bytes | None] | None:
        """Claim a request id. None: it is ours to verify. Otherwise the earlier claim's
        (application fingerprint, verdict bytes or None while it is in progress)."""
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    insert(VerdictRecord).values(
                        request_key=request_key, application=application, claimed_at=self._clock()
                    )
                )
            return None
        except IntegrityError:
            with self._engine.connect() as conn:
                row = conn.execute(
                    select(VerdictRecord.application, VerdictRecord.verdict).where(
                        VerdictRecord.request_key == request_key
                    )
                ).first()
            if row is None:  # released in between: try once more
                return self.claim(request_key, application)
            if row[1] is None and bytes(row[0]) == application and self._take_over(request_key):
                return None
            return bytes(row[0]), None if row[1] is None else bytes(row[1])

    @_guarded
    def claim_many(
        self, items: Sequence[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes | None] | None]:
        """:meth:`claim` for many request ids, in one transaction when none races with another."""
        keys = [k for k, _ in items]
        try:
            with self._engine.begin() as conn:
                rows = conn.execute(
                    select(
                        VerdictRecord.request_key, VerdictRecord.application, VerdictRecord.verdict
                    ).where(VerdictRecord.request_key.in_(keys))
                ).all()
                earlier = {
                    bytes(k): (bytes(a), None if v is None else bytes(v)) for k, a, v in rows
                }
                now = self._clock()
                new = [
                    {"request_key": k, "application": a, "claimed_at": now}
                    for k, a in items
                    if k not in earlier
                ]
                if new:
                    conn.execute(insert(VerdictRecord), new)
            out = []
            for k, a in items:
                e = earlier.get(k)
                if e is not None and e[1] is None and e[0] == a and self._take_over(k):
                    e = None
                out.append(e)
            return out
        except IntegrityError:  # a concurrent claim of one of them: one at a time then
            return [self.claim(k, a) for k, a in items]

    def _set_each(self, items: Sequence[tuple[bytes, dict[str, Any]]]) -> None:
        """Update each claim's columns, in one transaction."""
        with self._engine.begin() as conn:
            for key, values in items:
                conn.execute(
                    update(VerdictRecord).where(VerdictRecord.request_key == key).values(**values)
                )

    @_guarded
    def complete_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        self._set_each([(key, {"verdict": verdict}) for key, verdict in items])

    @_guarded
    def complete(self, request_key: bytes, verdict: bytes) -> None:
        self._set_each([(request_key, {"verdict": verdict})])

    @_guarded
    def release(self, request_key: bytes) -> None:
        """Give a claimed id back after a failure, so the caller may retry with it."""
        with self._engine.begin() as conn:
            conn.execute(
                delete(VerdictRecord).where(
                    VerdictRecord.request_key == request_key, VerdictRecord.verdict.is_(None)
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
        self._set_each([(key, {"pending": verdict}) for key, verdict in items])

    @_guarded
    def open_claims(self) -> list[OpenClaim]:
        """Every claim still in progress (at start: those of a previous life of the service)."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(
                    VerdictRecord.request_key,
                    VerdictRecord.query_id,
                    VerdictRecord.from_size,
                    VerdictRecord.pending,
                ).where(VerdictRecord.verdict.is_(None))
            ).all()
        return [
            OpenClaim(
                bytes(k), q, None if size is None else int(size), None if p is None else bytes(p)
            )
            for k, q, size, p in rows
        ]

"""Idempotency: one verdict per (caller, request id), stored without the applicant's ID.

A request id is claimed before the verification starts, so two concurrent calls with the same
id never both verify: the second is told the first is in progress. Keys and application
fingerprints are HMACs under the audit key, so the table reveals neither the request ids nor
whom they were about.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from sqlalchemy import Engine, Float, LargeBinary, create_engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class VerdictRecord(Base):
    __tablename__ = "verdict_record"
    request_key: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    application: Mapped[bytes] = mapped_column(LargeBinary(32))
    verdict: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # None: in progress
    claimed_at: Mapped[float] = mapped_column(Float, default=0.0)


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

    def complete_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        with self._engine.begin() as conn:
            for key, verdict in items:
                conn.execute(
                    update(VerdictRecord)
                    .where(VerdictRecord.request_key == key)
                    .values(verdict=verdict)
                )

    def complete(self, request_key: bytes, verdict: bytes) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                update(VerdictRecord)
                .where(VerdictRecord.request_key == request_key)
                .values(verdict=verdict)
            )

    def release(self, request_key: bytes) -> None:
        """Give a claimed id back after a failure, so the caller may retry with it."""
        with self._engine.begin() as conn:
            conn.execute(
                delete(VerdictRecord).where(
                    VerdictRecord.request_key == request_key, VerdictRecord.verdict.is_(None)
                )
            )

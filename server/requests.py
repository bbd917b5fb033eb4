"""Idempotency: a verdict per (caller, request id), stored without the applicant's ID.

Keys and application fingerprints are HMACs under the audit key, so the table reveals neither
the request ids nor whom they were about.
"""

from __future__ import annotations

from sqlalchemy import Engine, LargeBinary, create_engine, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class VerdictRecord(Base):
    __tablename__ = "verdict_record"
    request_key: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    application: Mapped[bytes] = mapped_column(LargeBinary(32))
    verdict: Mapped[bytes] = mapped_column(LargeBinary)


class RequestBook:
    def __init__(self, url: str) -> None:
        self._engine: Engine = create_engine(url)
        Base.metadata.create_all(self._engine)

    def find(self, request_key: bytes) -> tuple[bytes, bytes] | None:
        """(application fingerprint, verdict bytes) of an earlier request, if any."""
        with self._engine.connect() as conn:
            row = conn.execute(
                select(VerdictRecord.application, VerdictRecord.verdict).where(
                    VerdictRecord.request_key == request_key
                )
            ).first()
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    def save(self, request_key: bytes, application: bytes, verdict: bytes) -> None:
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    insert(VerdictRecord).values(
                        request_key=request_key, application=application, verdict=verdict
                    )
                )
        except IntegrityError:
            pass  # a concurrent duplicate: the first verdict stands

"""The monitored population (主动发现), held as tokens, never ID numbers.

A household is enrolled with a standing authorisation until an end date. The service keeps:
- the registry's monitoring handle (sealed under a key only the registry holds) to have the
  household re-checked without an ID number, and the applicant's audit token for the log;
- the household's padded tokens at the departments whose events matter (``watch_token``), so
  that an event names a watched household by one indexed lookup, and an event about anyone else
  is dropped on arrival without a trace;
- the last decision, to tell when a re-check changes it (not the benefit: nothing compares it,
  so it is not kept; issue #24 item 4).

A matched event is queued (``monitor_event``) and re-checked by :mod:`hedui.server.monitor`
(claimed with a lease, so that one replica's crash does not lose it). An amount event (medical
self-pay, a 12-month running total) is queued only when it crosses its threshold; the service
keeps whether the person's total was over it (``event_level``), never the amount.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Engine,
    Integer,
    LargeBinary,
    RowMapping,
    String,
    UniqueConstraint,
    delete,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column

from hedui.core.policy.monitoring import MonitoringRules
from hedui.server.errors import ServiceError
from hedui.server.schema import Base

LEASE_MS = 10 * 60 * 1000  # a claimed event not finished within this is taken again


class WatchError(ServiceError):
    """A watch-list step that cannot be taken (no such watch, a bad end date)."""


class WatchRow(Base):
    __tablename__ = "watch"
    __table_args__ = (UniqueConstraint("pseudonym", "program", name="uq_watch_household"),)
    watch_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    enrol_key: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    pseudonym: Mapped[bytes] = mapped_column(LargeBinary(32))
    program: Mapped[str] = mapped_column(String(16))
    region: Mapped[str] = mapped_column(String(32))
    district: Mapped[str] = mapped_column(String(12))
    masked: Mapped[str] = mapped_column(String(32))
    applicant_token: Mapped[bytes] = mapped_column(LargeBinary(32))
    handle: Mapped[bytes] = mapped_column(LargeBinary(256))
    consent: Mapped[bytes] = mapped_column(LargeBinary(512))  # the standing authorisation
    until: Mapped[str] = mapped_column(String(10))
    enrolled_on: Mapped[str] = mapped_column(String(10))
    enrolled_by: Mapped[str] = mapped_column(String(128))
    decision: Mapped[str] = mapped_column(String(16))  # the last one: baseline, then re-checks


class WatchTokenRow(Base):
    __tablename__ = "watch_token"
    connector_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    watch_id: Mapped[str] = mapped_column(String(32), primary_key=True)


class EventLevelRow(Base):
    """Whether a watched person's running total (e.g. medical self-pay) was over its threshold
    at the last report: an amount raises its event once, when it crosses."""

    __tablename__ = "event_level"
    watch_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    connector_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    over: Mapped[bool] = mapped_column(Boolean)


class MonitorEventRow(Base):
    """A department's event about a watched household, waiting for (or done with) its re-check."""

    __tablename__ = "monitor_event"
    event_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    watch_id: Mapped[str] = mapped_column(String(32), index=True)
    connector_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    occurred_on: Mapped[str] = mapped_column(String(10))
    received_ms: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(10), index=True)  # queued, done
    taken_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    taken_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer)
    alert_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    note: Mapped[str | None] = mapped_column(String(200), nullable=True)  # why no alert


_WATCH = WatchRow.__table__
_TOKEN = WatchTokenRow.__table__
_LEVEL = EventLevelRow.__table__
_EVENT = MonitorEventRow.__table__


@dataclass(frozen=True)
class Watch:
    watch_id: str
    pseudonym: bytes
    program: str
    region: str
    district: str
    masked: str
    applicant_token: bytes
    handle: bytes
    consent: bytes
    until: dt.date
    enrolled_on: dt.date
    enrolled_by: str
    decision: str


@dataclass(frozen=True)
class IncomingEvent:
    """One event as a connector pushed it (kept in memory only)."""

    connector_id: str
    token: bytes
    kind: str
    occurred_on: dt.date
    amount_fen: int


@dataclass(frozen=True)
class QueuedEvent:
    event_id: int
    watch_id: str
    connector_id: str
    kind: str
    occurred_on: dt.date


def _watch(row: RowMapping) -> Watch:
    values = {k: row[k] for k in Watch.__dataclass_fields__}
    for name in ("until", "enrolled_on"):
        values[name] = dt.date.fromisoformat(values[name])
    for name in ("pseudonym", "applicant_token", "handle", "consent"):
        values[name] = bytes(values[name])
    return Watch(**values)


class WatchList:
    """The watch-list and the event queue in the service's state database."""

    def __init__(
        self,
        engine: Engine,
        today: Callable[[], dt.date],
        now_ms: Callable[[], int],
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._engine = engine
        self._today = today
        self._now_ms = now_ms
        self._new_id = new_id

    # -- enrolment ----------------------------------------------------------------------------

    def by_enrol_key(self, enrol_key: bytes) -> Watch | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(_WATCH).where(_WATCH.c.enrol_key == enrol_key)).mappings()
            found = row.first()
        return _watch(found) if found else None

    def enrol(
        self,
        *,
        enrol_key: bytes,
        pseudonym: bytes,
        program: str,
        region: str,
        district: str,
        masked: str,
        applicant_token: bytes,
        handle: bytes,
        consent: bytes,
        until: dt.date,
        enrolled_by: str,
        decision: str,
        tokens: Mapping[str, Sequence[bytes]],
    ) -> Watch:
        """Watch a household (or renew its watch for the programme: a new end date, handle,
        baseline and tokens), with its tokens at the connectors whose events matter."""
        values = {
            "enrol_key": enrol_key,
            "region": region,
            "district": district,
            "masked": masked,
            "applicant_token": applicant_token,
            "handle": handle,
            "consent": consent,
            "until": until.isoformat(),
            "enrolled_on": self._today().isoformat(),
            "enrolled_by": enrolled_by,
            "decision": decision,
        }
        with self._engine.begin() as conn:
            watch_id = conn.execute(
                select(_WATCH.c.watch_id).where(
                    _WATCH.c.pseudonym == pseudonym, _WATCH.c.program == program
                )
            ).scalar()
            if watch_id is None:
                watch_id = self._new_id()
                conn.execute(
                    insert(WatchRow).values(
                        watch_id=watch_id, pseudonym=pseudonym, program=program, **values
                    )
                )
            else:
                conn.execute(update(WatchRow).where(WatchRow.watch_id == watch_id).values(**values))
            self._replace_tokens(conn, watch_id, tokens)
        return self.get(watch_id)

    @staticmethod
    def _replace_tokens(
        conn: Connection, watch_id: str, tokens: Mapping[str, Sequence[bytes]]
    ) -> None:
        conn.execute(delete(WatchTokenRow).where(WatchTokenRow.watch_id == watch_id))
        rows = [
            {"connector_id": c, "token": t, "watch_id": watch_id}
            for c, ts in sorted(tokens.items())
            for t in dict.fromkeys(ts)
        ]
        if rows:
            conn.execute(insert(WatchTokenRow), rows)

    def get(self, watch_id: str) -> Watch:
        with self._engine.connect() as conn:
            row = conn.execute(select(_WATCH).where(_WATCH.c.watch_id == watch_id)).mappings()
            found = row.first()
        if found is None:
            raise WatchError(f"no watch {watch_id!r}")
        return _watch(found)

    def rechecked(
        self,
        watch_id: str,
        decision: str,
        tokens: Mapping[str, Sequence[bytes]] | None,
    ) -> None:
        """After a re-check: its decision is the one the next event is compared with; its
        tokens (of the current token epoch) replace the old."""
        with self._engine.begin() as conn:
            conn.execute(
                update(WatchRow).where(WatchRow.watch_id == watch_id).values(decision=decision)
            )
            if tokens is not None:
                self._replace_tokens(conn, watch_id, tokens)

    # -- events ---------------------------------------------------------------------------------

    def match(self, events: Sequence[IncomingEvent], rules: MonitoringRules) -> list[QueuedEvent]:
        """Queue the events about watched households (one lookup for the lot); the others are
        dropped here and leave nothing. An amount event is queued only when it crosses its
        threshold; only whether the person is over it is kept."""
        if not events:
            return []
        keys = {(e.connector_id, e.token) for e in events}
        today = self._today().isoformat()
        with self._engine.begin() as conn:
            found = conn.execute(
                select(_TOKEN.c.connector_id, _TOKEN.c.token, _TOKEN.c.watch_id)
                .join(_WATCH, _WATCH.c.watch_id == _TOKEN.c.watch_id)
                .where(tuple_(_TOKEN.c.connector_id, _TOKEN.c.token).in_(list(keys)))
                .where(_WATCH.c.until >= today)
            ).all()
            if not found:
                return []
            watching: dict[tuple[str, bytes], list[str]] = {}
            for cid, token, watch_id in found:
                watching.setdefault((cid, bytes(token)), []).append(watch_id)
            queued = []
            for e in events:
                rule = rules.rule(e.kind)
                for watch_id in watching.get((e.connector_id, e.token), ()):
                    if rule is None:
                        continue
                    if rule.threshold_fen is not None:
                        key = (watch_id, e.connector_id, e.token, e.kind)
                        was = conn.execute(
                            select(_LEVEL.c.over).where(
                                tuple_(
                                    _LEVEL.c.watch_id,
                                    _LEVEL.c.connector_id,
                                    _LEVEL.c.token,
                                    _LEVEL.c.kind,
                                )
                                == key
                            )
                        ).scalar()
                        over = e.amount_fen >= rule.threshold_fen
                        if was is None:
                            conn.execute(
                                insert(EventLevelRow).values(
                                    watch_id=watch_id,
                                    connector_id=e.connector_id,
                                    token=e.token,
                                    kind=e.kind,
                                    over=over,
                                )
                            )
                        elif bool(was) != over:
                            conn.execute(
                                update(EventLevelRow)
                                .where(
                                    EventLevelRow.watch_id == watch_id,
                                    EventLevelRow.connector_id == e.connector_id,
                                    EventLevelRow.token == e.token,
                                    EventLevelRow.kind == e.kind,
                                )
                                .values(over=over)
                            )
                        if not over or was:
                            continue
                    event_id = conn.execute(
                        insert(MonitorEventRow).values(
                            watch_id=watch_id,
                            connector_id=e.connector_id,
                            kind=e.kind,
                            occurred_on=e.occurred_on.isoformat(),
                            received_ms=self._now_ms(),
                            state="queued",
                            attempts=0,
                        )
                    ).inserted_primary_key
                    assert event_id is not None
                    queued.append(
                        QueuedEvent(
                            int(event_id[0]), watch_id, e.connector_id, e.kind, e.occurred_on
                        )
                    )
        return queued

    def take(self, owner: str, limit: int = 8) -> list[QueuedEvent]:
        """Claim queued events for re-checking: free ones, or those whose claim is older than
        the lease (a replica that stopped)."""
        now = self._now_ms()
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(_EVENT)
                .where(_EVENT.c.state == "queued")
                .where(or_(_EVENT.c.taken_ms.is_(None), _EVENT.c.taken_ms < now - LEASE_MS))
                .order_by(_EVENT.c.event_id)
                .limit(limit)
            ).mappings()
            candidates = list(rows)
        taken = []
        for r in candidates:
            with self._engine.begin() as conn:
                done = conn.execute(
                    update(MonitorEventRow)
                    .where(
                        MonitorEventRow.event_id == r["event_id"],
                        MonitorEventRow.state == "queued",
                        (
                            MonitorEventRow.taken_ms.is_(None)
                            if r["taken_ms"] is None
                            else MonitorEventRow.taken_ms == r["taken_ms"]
                        ),
                    )
                    .values(taken_by=owner, taken_ms=now, attempts=MonitorEventRow.attempts + 1)
                ).rowcount
            if done == 1:
                taken.append(
                    QueuedEvent(
                        r["event_id"],
                        r["watch_id"],
                        r["connector_id"],
                        r["kind"],
                        dt.date.fromisoformat(r["occurred_on"]),
                    )
                )
        return taken

    def release(self, event_id: int) -> None:
        """Give a claimed event back (its re-check failed; it is tried again)."""
        with self._engine.begin() as conn:
            conn.execute(
                update(MonitorEventRow)
                .where(MonitorEventRow.event_id == event_id, MonitorEventRow.state == "queued")
                .values(taken_by=None, taken_ms=None)
            )

    def finish(self, event_id: int, alert_id: str | None, note: str = "") -> None:
        with self._engine.begin() as conn:
            conn.execute(
                update(MonitorEventRow)
                .where(MonitorEventRow.event_id == event_id)
                .values(state="done", alert_id=alert_id, note=note[:200] or None)
            )

    def pending(self) -> int:
        with self._engine.connect() as conn:
            rows = conn.execute(select(_EVENT.c.event_id).where(_EVENT.c.state == "queued"))
            return len(rows.all())

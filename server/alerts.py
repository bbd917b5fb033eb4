"""主动发现 alerts and their follow-up (派单 → 反馈): raised for a monitored household's district
with a deadline from the region's policy, accepted and closed by a caseworker with an outcome,
overdue and escalated one level when not closed in time, summed up per district each month.

An alert names the household only masked (the applicant's ID number as the registry masks it)
and holds no figure of any source: its kind, the event's date, the decision before and after the
re-check and the benefit the re-check found. The benefit gives the household's income to a
yuan, so it is kept sealed (AES-GCM under the service's state key, bound to the alert's id; see
:class:`hedui.server.requests.StateSealer`), never in plaintext (issue #24 item 4). Dates are the
deployment's calendar days; the clock is passed in.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import (
    Engine,
    Integer,
    LargeBinary,
    RowMapping,
    String,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column

from hedui.core.resident_id import CASEWORKER_ID, NOTE
from hedui.server.errors import ServiceError
from hedui.server.requests import StateDamaged, StateSealer
from hedui.server.schema import Base

OUTCOMES = ("visited", "applied", "enrolled", "not_needed")
STATES = ("open", "accepted", "closed")
NOTE_CHARS = 500
# a benefit that migration service_0005 moved out of the old plaintext column: it had no key, so
# it wrote LEGACY + the 8-byte value; the service seals these when it opens the book
LEGACY = b"\x00"
_LEGACY_SIZE = len(LEGACY) + 8


class AlertError(ServiceError):
    """An alert step that cannot be taken (unknown alert, wrong state, bad outcome or note)."""


class AlertNotFound(AlertError):
    pass


class AlertTextError(AlertError):
    """Caller-chosen text (a note, a caseworker id) outside its character set or holding what
    may be an ID number; ``field`` names the request field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _check_caseworker(who: str) -> None:
    """``who`` is "<caller>/<caseworker>" (the caller's certificate name alone without one)."""
    _, _, caseworker = who.partition("/")
    if (problem := CASEWORKER_ID.problem(caseworker)) is not None:
        raise AlertTextError("caseworker_id", f"caseworker_id: {problem}")


class AlertWrongState(AlertError):
    """The step does not fit the alert's state (or another caseworker took it meanwhile)."""


class AlertRow(Base):
    __tablename__ = "alert"
    alert_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    watch_id: Mapped[str] = mapped_column(String(32), index=True)
    district: Mapped[str] = mapped_column(String(12), index=True)
    masked: Mapped[str] = mapped_column(String(32))
    program: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(32))
    event_on: Mapped[str] = mapped_column(String(10))
    raised_on: Mapped[str] = mapped_column(String(10), index=True)
    due_on: Mapped[str] = mapped_column(String(10))
    escalate_on: Mapped[str] = mapped_column(String(10))
    decision_before: Mapped[str] = mapped_column(String(16))
    decision_after: Mapped[str] = mapped_column(String(16))
    benefit_sealed: Mapped[bytes] = mapped_column(LargeBinary(64))  # sealed, see StateSealer
    suggest: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(10), index=True)
    accepted_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    closed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    closed_on: Mapped[str | None] = mapped_column(String(10), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    note: Mapped[str | None] = mapped_column(String(NOTE_CHARS), nullable=True)
    version: Mapped[int] = mapped_column(Integer)  # each step adds one (no lost update)
    recheck_request_id: Mapped[str] = mapped_column(String(64), default="")
    level_logged: Mapped[int] = mapped_column(Integer, default=0)  # overdue/escalated, logged


_TABLE = AlertRow.__table__


@dataclass(frozen=True)
class Alert:
    alert_id: str
    watch_id: str
    district: str
    masked: str
    program: str
    kind: str
    event_on: dt.date
    raised_on: dt.date
    due_on: dt.date
    escalate_on: dt.date
    decision_before: str
    decision_after: str
    benefit_fen: int
    suggest: str
    state: str
    accepted_by: str | None
    closed_by: str | None
    closed_on: dt.date | None
    outcome: str | None
    note: str | None
    recheck_request_id: str
    level_logged: int

    def level(self, today: dt.date) -> int:
        """0: with the district, in time; 1: overdue; 2: escalated to the next level."""
        when = self.closed_on if self.closed_on is not None else today
        if when <= self.due_on:
            return 0
        return 1 if when <= self.escalate_on else 2

    def overdue(self, today: dt.date) -> bool:
        return self.state != "closed" and today > self.due_on


@dataclass(frozen=True)
class NewAlert:
    watch_id: str
    district: str
    masked: str
    program: str
    kind: str
    event_on: dt.date
    decision_before: str
    decision_after: str
    benefit_fen: int
    suggest: str
    recheck_request_id: str = ""


_DATES = ("event_on", "raised_on", "due_on", "escalate_on", "closed_on")


def _benefit_key(alert_id: str) -> bytes:
    """What an alert's sealed benefit is bound to: its row (and no verdict's request key)."""
    return b"hedui/alert-benefit\0" + alert_id.encode()


def _fen(value: int) -> bytes:
    return value.to_bytes(8, "big", signed=True)


@dataclass(frozen=True)
class DistrictMonth:
    district: str
    raised: int
    closed_in_time: int
    closed_late: int
    overdue: int  # not closed by the month's end (or today), past its deadline
    outcomes: dict[str, int]


class AlertBook:
    """Alerts in the service's state database (schema by migration, see ``server/schema.py``)."""

    def __init__(
        self,
        engine: Engine,
        today: Callable[[], dt.date],
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        *,
        sealer: StateSealer,
    ) -> None:
        self._engine = engine
        self._today = today
        self._new_id = new_id
        self._sealer = sealer
        self.seal_legacy()

    def seal_legacy(self) -> int:
        """Seal the benefits the migration from plaintext left marked (it had no key); how many.
        Only here is an unsealed benefit accepted: afterwards one fails to open."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(_TABLE.c.alert_id, _TABLE.c.benefit_sealed).where(
                    func.length(_TABLE.c.benefit_sealed) == _LEGACY_SIZE
                )
            ).all()
        done = 0
        for alert_id, stored in rows:
            stored = bytes(stored)
            if not stored.startswith(LEGACY):
                continue
            sealed = self._sealer.seal(_benefit_key(alert_id), stored[len(LEGACY) :])
            with self._engine.begin() as conn:  # once, when replicas start together
                done += conn.execute(
                    update(AlertRow)
                    .where(AlertRow.alert_id == alert_id, AlertRow.benefit_sealed == stored)
                    .values(benefit_sealed=sealed)
                ).rowcount
        return done

    def _alert(self, row: RowMapping) -> Alert:
        values = {k: row[k] for k in Alert.__dataclass_fields__ if k != "benefit_fen"}
        for name in _DATES:
            if values[name] is not None:
                values[name] = dt.date.fromisoformat(values[name])
        try:
            fen = self._sealer.open(_benefit_key(row["alert_id"]), bytes(row["benefit_sealed"]))
        except StateDamaged:
            raise StateDamaged(
                f"the benefit of alert {row['alert_id']} fails its integrity check (altered, "
                "moved or written unsealed); the operator must look at the service's state "
                "database (the re-check's verdict is in the audit log)"
            ) from None
        return Alert(**values, benefit_fen=int.from_bytes(fen, "big", signed=True))

    def raise_alert(
        self,
        new: NewAlert,
        deadline_days: int,
        escalate_after_days: int,
        alert_id: str | None = None,
    ) -> Alert:
        """Raise an alert; with ``alert_id``, once (a repeat returns the alert raised before)."""
        if alert_id is not None:
            try:
                return self.get(alert_id)
            except AlertNotFound:
                pass
        today = self._today()
        due = today + dt.timedelta(days=deadline_days)
        new_id = alert_id or self._new_id()
        row = {
            "alert_id": new_id,
            **{k: getattr(new, k) for k in NewAlert.__dataclass_fields__ if k != "benefit_fen"},
            "benefit_sealed": self._sealer.seal(_benefit_key(new_id), _fen(new.benefit_fen)),
            "event_on": new.event_on.isoformat(),
            "raised_on": today.isoformat(),
            "due_on": due.isoformat(),
            "escalate_on": (due + dt.timedelta(days=escalate_after_days)).isoformat(),
            "state": "open",
            "version": 1,
            "level_logged": 0,
        }
        with self._engine.begin() as conn:
            conn.execute(insert(AlertRow).values(**row))
        return self.get(str(row["alert_id"]))

    def get(self, alert_id: str) -> Alert:
        with self._engine.connect() as conn:
            row = (
                conn.execute(select(_TABLE).where(_TABLE.c.alert_id == alert_id)).mappings().first()
            )
        if row is None:
            raise AlertNotFound(f"no alert {alert_id!r}; `hedui alerts list` shows them")
        return self._alert(row)

    def find(self, *, district: str | None = None, state: str | None = None) -> list[Alert]:
        stmt = select(_TABLE).order_by(_TABLE.c.due_on, _TABLE.c.alert_id)
        if district:
            stmt = stmt.where(_TABLE.c.district == district)
        if state:
            if state not in STATES:
                raise AlertError(f"state must be one of {', '.join(STATES)}, not {state!r}")
            stmt = stmt.where(_TABLE.c.state == state)
        with self._engine.connect() as conn:
            return [self._alert(r) for r in conn.execute(stmt).mappings()]

    def overdue(self) -> list[Alert]:
        today = self._today()
        return [a for a in self.find() if a.overdue(today)]

    def _step(self, alert_id: str, allowed: Sequence[str], **values: object) -> Alert:
        current = self.get(alert_id)
        if current.state not in allowed:
            raise AlertWrongState(
                f"alert {alert_id} is {current.state}; this step needs it {' or '.join(allowed)}"
            )
        with self._engine.begin() as conn:
            done = conn.execute(
                update(AlertRow)
                .where(AlertRow.alert_id == alert_id, AlertRow.state == current.state)
                .values(version=AlertRow.version + 1, **values)
            ).rowcount
        if done != 1:
            raise AlertWrongState(f"alert {alert_id} changed meanwhile; look at it again")
        return self.get(alert_id)

    def accept(self, alert_id: str, who: str) -> Alert:
        _check_caseworker(who)
        return self._step(alert_id, ("open",), state="accepted", accepted_by=who)

    def close(self, alert_id: str, who: str, outcome: str, note: str) -> Alert:
        if outcome not in OUTCOMES:
            raise AlertError(f"outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
        if len(note) > NOTE_CHARS:
            raise AlertTextError(
                "note", f"the note is {len(note)} characters; at most {NOTE_CHARS}"
            )
        if (problem := NOTE.problem(note)) is not None:
            raise AlertTextError("note", f"note: {problem}")
        _check_caseworker(who)
        return self._step(
            alert_id,
            ("open", "accepted"),
            state="closed",
            closed_by=who,
            closed_on=self._today().isoformat(),
            outcome=outcome,
            note=note,
        )

    def levels_to_log(self) -> list[tuple[Alert, int]]:
        """Open alerts that went overdue (1) or were escalated (2) since that was logged."""
        today = self._today()
        out = []
        for a in self.find():
            if a.state != "closed" and a.level(today) > a.level_logged:
                out.append((a, a.level(today)))
        return out

    def level_logged(self, alert_id: str, level: int) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                update(AlertRow)
                .where(AlertRow.alert_id == alert_id, AlertRow.level_logged < level)
                .values(level_logged=level)
            )

    def report(self, month: str) -> list[DistrictMonth]:
        """Per district, the alerts raised in ``month`` (YYYY-MM) and what became of them by
        the month's end (or today, for the current month)."""
        if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
            raise AlertError(f"--month must be YYYY-MM, e.g. 2026-11, not {month!r}")
        first = dt.date.fromisoformat(f"{month}-01")
        end = (first + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
        seen = min(end, self._today())
        by: dict[str, list[Alert]] = {}
        for a in self.find():
            if first <= a.raised_on <= end:
                by.setdefault(a.district, []).append(a)
        out = []
        for district, alerts in sorted(by.items()):
            closed = [a for a in alerts if a.closed_on is not None and a.closed_on <= seen]
            in_time = sum(1 for a in closed if a.closed_on is not None and a.closed_on <= a.due_on)
            overdue = sum(1 for a in alerts if a not in closed and seen > a.due_on)
            out.append(
                DistrictMonth(
                    district,
                    len(alerts),
                    in_time,
                    len(closed) - in_time,
                    overdue,
                    dict(Counter(a.outcome for a in closed if a.outcome)),
                )
            )
        return out

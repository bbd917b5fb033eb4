"""The follow-up of 主动发现 alerts with an injected clock: deadline and escalation from the
policy, accept and close with an outcome, overdue, and the monthly report per district (its
expected numbers worked out by hand below)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from hedui.core.resident_id import make
from hedui.server.alerts import LEGACY, AlertBook, AlertError, NewAlert
from hedui.server.requests import RequestBook, StateDamaged, StateSealer

SEALER = StateSealer(b"s" * 32)

DAY = dt.date(2026, 11, 2)


@pytest.fixture
def book(tmp_path: Path) -> tuple[AlertBook, list[dt.date]]:
    url = f"sqlite:///{tmp_path / 'service.db'}"
    RequestBook(url).close()  # the state's schema, by migration
    today = [DAY]
    ids = (f"a{n:03d}" for n in itertools.count(1))
    book = AlertBook(create_engine(url), lambda: today[0], lambda: next(ids), sealer=SEALER)
    return book, today


def _new(district: str = "330102", kind: str = "death") -> NewAlert:
    return NewAlert(
        "w1",
        district,
        "330**************2",
        "dibao",
        kind,
        DAY,
        "INELIGIBLE",
        "ELIGIBLE",
        126000,
        "",
    )


def test_an_alert_is_due_by_the_policy_s_deadline_and_escalates_after(
    book: tuple[AlertBook, list[dt.date]],
) -> None:
    alerts, today = book
    a = alerts.raise_alert(_new(), deadline_days=15, escalate_after_days=5)
    assert (a.alert_id, a.state, a.due_on, a.escalate_on) == (
        "a001",
        "open",
        dt.date(2026, 11, 17),
        dt.date(2026, 11, 22),
    )
    assert [a.level(dt.date(2026, 11, d)) for d in (17, 18, 22, 23)] == [0, 1, 1, 2]
    today[0] = dt.date(2026, 11, 18)
    assert [x.alert_id for x in alerts.overdue()] == ["a001"]
    alerts.accept("a001", "intake/caseworker-7")
    with pytest.raises(AlertError, match="is accepted; this step needs it open"):
        alerts.accept("a001", "intake/caseworker-8")
    closed = alerts.close("a001", "intake/caseworker-7", "visited", "visited on the 18th")
    assert (closed.state, closed.outcome, closed.closed_on, closed.level(DAY)) == (
        "closed",
        "visited",
        dt.date(2026, 11, 18),
        1,  # closed late: overdue for ever, never escalated
    )
    assert alerts.overdue() == []
    with pytest.raises(AlertError, match="is closed"):
        alerts.close("a001", "x", "visited", "")


def test_a_bad_step_is_refused_by_name(book: tuple[AlertBook, list[dt.date]]) -> None:
    alerts, _ = book
    alerts.raise_alert(_new(), 15, 5)
    with pytest.raises(AlertError, match="outcome must be one of visited, applied"):
        alerts.close("a001", "x", "done", "")
    with pytest.raises(AlertError, match="looks like a resident ID number"):
        alerts.close("a001", "x", "visited", f"met {make('330102', dt.date(1960, 1, 1), 3).value}")
    with pytest.raises(AlertError, match="at most 500"):
        alerts.close("a001", "x", "visited", "x" * 501)
    with pytest.raises(AlertError, match="no alert 'a404'"):
        alerts.get("a404")
    with pytest.raises(AlertError, match="state must be one of"):
        alerts.find(state="pending")
    assert alerts.get("a001").state == "open"  # nothing was lost


def test_the_monthly_report_per_district(book: tuple[AlertBook, list[dt.date]]) -> None:
    alerts, today = book
    # 2026-11-02: three alerts in 330102, one in 330106; all due 2026-11-17
    for district in ("330102", "330102", "330102", "330106"):
        alerts.raise_alert(_new(district), 15, 5)
    today[0] = dt.date(2026, 11, 10)
    alerts.close("a001", "c", "enrolled", "")  # in time
    today[0] = dt.date(2026, 11, 20)
    alerts.close("a002", "c", "not_needed", "")  # late
    # a003 (330102) and a004 (330106) stay open: overdue at the month's end
    today[0] = dt.date(2026, 12, 5)
    alerts.raise_alert(_new("330102"), 15, 5)  # December's: not in November's report
    report = {r.district: r for r in alerts.report("2026-11")}
    assert set(report) == {"330102", "330106"}
    r = report["330102"]
    assert (r.raised, r.closed_in_time, r.closed_late, r.overdue) == (3, 1, 1, 1)
    assert r.outcomes == {"enrolled": 1, "not_needed": 1}
    r = report["330106"]
    assert (r.raised, r.closed_in_time, r.closed_late, r.overdue) == (1, 0, 0, 1)
    with pytest.raises(AlertError, match="YYYY-MM"):
        alerts.report("2026-13")


def _raw(book: AlertBook, table: str) -> list[dict[str, object]]:
    with book._engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(f"SELECT * FROM {table}")).mappings()]


def test_the_benefit_is_kept_sealed_to_its_alert(book: tuple[AlertBook, list[dt.date]]) -> None:
    """Issue #24 item 4: the benefit gives the income to a yuan; the row holds it only sealed."""
    alerts, _ = book
    alerts.raise_alert(_new(), 15, 5)
    alerts.raise_alert(dataclasses.replace(_new(), benefit_fen=98_700), 15, 5)
    assert [a.benefit_fen for a in alerts.find()] == [126000, 98_700]  # as the caseworker sees it
    rows = _raw(alerts, "alert")
    assert {c for c in rows[0] if "benefit" in c} == {"benefit_sealed"}
    for row, fen in zip(rows, (126000, 98_700), strict=True):
        sealed = row["benefit_sealed"]
        assert isinstance(sealed, bytes)
        assert sealed.startswith(StateSealer.MARK) and len(sealed) == 1 + 12 + 8 + 16
        assert fen.to_bytes(8, "big") not in sealed and str(fen).encode() not in sealed
        assert fen not in row.values() and str(fen) not in row.values()
    # a sealed benefit moved to another alert, or written unsealed, does not open
    with alerts._engine.begin() as conn:
        conn.execute(
            text("UPDATE alert SET benefit_sealed = :b WHERE alert_id = 'a002'"),
            {"b": rows[0]["benefit_sealed"]},
        )
    with pytest.raises(StateDamaged, match="benefit of alert a002 fails its integrity check"):
        alerts.get("a002")
    with alerts._engine.begin() as conn:
        conn.execute(
            text("UPDATE alert SET benefit_sealed = :b WHERE alert_id = 'a002'"),
            {"b": LEGACY + (5).to_bytes(8, "big")},
        )
    with pytest.raises(StateDamaged):
        alerts.get("a002")
    with pytest.raises(StateDamaged):  # under another key
        AlertBook(alerts._engine, lambda: DAY, sealer=StateSealer(b"t" * 32)).get("a001")

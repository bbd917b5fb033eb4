"""A department's event feed (issue #13): from a CSV file, and from its source database's events
query on a real PostgreSQL schema standing in for a hospital system, in a read-only transaction;
a bad row refuses the whole feed with its line, and nothing is sent."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from hedui.connectors.errors import ImportRejected
from hedui.connectors.events import PersonEvent, read_events_csv, read_events_source
from hedui.core.resident_id import make

TODAY = dt.date(2026, 11, 24)
A = make("330106", dt.date(1960, 3, 1), 11).value
B = make("330281", dt.date(1985, 7, 9), 22).value
QUERY = (
    "SELECT id_number, 'medical_self_pay', day, total_fen FROM self_pay_12m "
    "WHERE day >= CAST(:since AS date) ORDER BY day"
)


def test_csv_events_and_their_problems(tmp_path: Path) -> None:
    good = tmp_path / "deaths.csv"
    good.write_text(
        f"id_number,kind,occurred_on,amount_fen\n{A},death,2026-11-20,\n"
        f"{B},medical_self_pay,2026-11-21,4100000\n"
    )
    assert read_events_csv(good, TODAY) == [
        PersonEvent(A, "death", dt.date(2026, 11, 20), 0),
        PersonEvent(B, "medical_self_pay", dt.date(2026, 11, 21), 4_100_000),
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text(
        f"id_number,kind,occurred_on,amount_fen\n{A},wedding,2026-11-20,\n"
        f"{B},death,2026-12-30,\n{A},medical_self_pay,2026-11-21,40000.00\n"
    )
    with pytest.raises(ImportRejected) as e:
        read_events_csv(bad, TODAY)
    text_ = str(e.value)
    assert "bad.csv:2: kind 'wedding'" in text_
    assert "bad.csv:3: occurred_on 2026-12-30 is in the future" in text_
    assert "bad.csv:4: amount_fen '40000.00'" in text_


def test_source_events_since_a_day_read_only(pg_url: str) -> None:
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE self_pay_12m (id_number text, day date, total_fen bigint)"))
        conn.execute(
            text(
                "INSERT INTO self_pay_12m VALUES (:a, '2026-10-01', 100), (:b, '2026-11-20', 4100000)"
            ),
            {"a": A, "b": B},
        )
    events = read_events_source(pg_url, QUERY, dt.date(2026, 11, 1), TODAY)
    assert events == [PersonEvent(B, "medical_self_pay", dt.date(2026, 11, 20), 4_100_000)]
    with pytest.raises(Exception, match="events query failed"):
        read_events_source(
            pg_url,
            "DELETE FROM self_pay_12m WHERE day >= :since RETURNING id_number, 'death', day, 0",
            dt.date(2026, 1, 1),
            TODAY,
        )
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM self_pay_12m")).scalar() == 2
    engine.dispose()

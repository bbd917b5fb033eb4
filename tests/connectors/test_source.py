"""A connector's source database (`hedui connector sync`): every row checked as a CSV row is,
the queries matched to the declared fields, and run read-only."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from hedui.connectors.errors import ConnectorError, ImportRejected
from hedui.connectors.source import SourceConfig, read_source
from hedui.core.deployment import BANK
from hedui.core.resident_id import make

TODAY = dt.date(2026, 11, 24)
A = make("330106", dt.date(1970, 3, 4), 11).value
B = make("330106", dt.date(1980, 1, 2), 12).value


def _source(tmp_path: Path, rows: list[tuple[str, object]]) -> str:
    url = f"sqlite:///{tmp_path / 'core.sqlite'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE acct (id_number TEXT, fen)"))
        for i, v in rows:
            conn.execute(text("INSERT INTO acct VALUES (:i, :v)"), {"i": i, "v": v})
    engine.dispose()
    return url


QUERIES = {
    "deposits": "SELECT id_number, fen FROM acct",
    "wealth_products": "SELECT id_number, 0 FROM acct",
}


def test_rows_of_one_person_are_added_up(tmp_path: Path) -> None:
    url = _source(tmp_path, [(A, 100), (A, 250), (B.lower(), 7)])
    seen: list[tuple[str, int]] = []
    totals = read_source(
        SourceConfig(url, QUERIES), BANK, today=TODAY, progress=lambda f, n: seen.append((f, n))
    )
    assert totals == {
        A: {"deposits": 350, "wealth_products": 0},
        B: {"deposits": 7, "wealth_products": 0},
    }
    assert ("deposits", 3) in seen


def test_a_bad_row_imports_nothing_and_is_named(tmp_path: Path) -> None:
    url = _source(tmp_path, [(A, 100), ("not-an-id", 5), (B, 12.5), (B, -1)])
    with pytest.raises(ImportRejected) as info:
        read_source(SourceConfig(url, QUERIES), BANK, today=TODAY)
    text_ = str(info.value)
    assert "query deposits" in text_ and "id_number" in text_
    assert "12.5 is not a non-negative whole number" in text_ and "-1" in text_


def test_each_declared_field_needs_its_query(tmp_path: Path) -> None:
    url = _source(tmp_path, [])
    with pytest.raises(ConnectorError, match="missing: wealth_products"):
        read_source(SourceConfig(url, {"deposits": QUERIES["deposits"]}), BANK, today=TODAY)
    with pytest.raises(ConnectorError, match="unknown: salary"):
        read_source(SourceConfig(url, {**QUERIES, "salary": "SELECT 1, 1"}), BANK, today=TODAY)


@pytest.mark.postgres
def test_a_query_that_writes_is_refused_by_the_source(pg_url: str) -> None:
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE SEQUENCE s"))
    engine.dispose()
    queries = {**QUERIES, "deposits": f"SELECT '{A}', nextval('s')"}  # a write disguised
    with pytest.raises(ConnectorError, match="read-only transaction"):
        read_source(SourceConfig(pg_url, queries), BANK, today=TODAY)

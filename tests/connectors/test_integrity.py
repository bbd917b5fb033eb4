"""Stored figures are sealed: a changed value or a removed row is caught, never answered."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hedui.connectors.integrity import DataIntegrityError, RowSeal
from hedui.connectors.store import HoldingStore, open_engine

SEAL = RowSeal(bytes(range(32)), "hrss")
A, B = b"\x01" * 32, b"\x02" * 32


def _store(path: Path) -> HoldingStore:
    store = HoldingStore(open_engine(f"sqlite:///{path}"), SEAL)
    store.replace_all(
        {A: {"monthly_pension": 151200}, B: {"monthly_wage": 300000}}, b"check", epoch=1
    )
    return store


def test_a_changed_figure_is_refused_and_named_and_others_are_answered(tmp_path: Path) -> None:
    db = tmp_path / "hrss.sqlite"
    store = _store(db)
    con = sqlite3.connect(db)
    con.execute("UPDATE holding SET value = 20128 WHERE value = 151200")  # the edit
    con.commit()
    con.close()
    with pytest.raises(DataIntegrityError) as info:
        store.sums_many([[A]], ["monthly_pension"])[0]
    assert info.value.rows == [f"monthly_pension of token {A[:6].hex()}…"]
    assert store.sums_many([[B]], ["monthly_wage"])[0] == {
        "monthly_wage": 300000
    }  # untouched household
    assert store.verify_all() == [f"monthly_pension of token {A[:6].hex()}…"]


def test_a_removed_row_fails_the_data_set_seal(tmp_path: Path) -> None:
    db = tmp_path / "hrss.sqlite"
    store = _store(db)
    con = sqlite3.connect(db)
    con.execute("DELETE FROM holding WHERE value = 151200")  # "no pension" is favourable
    con.commit()
    con.close()
    assert store.verify_all()[0].startswith("the data set")


def test_another_connectors_key_does_not_verify(tmp_path: Path) -> None:
    db = tmp_path / "hrss.sqlite"
    _store(db)
    other = HoldingStore(open_engine(f"sqlite:///{db}"), RowSeal(bytes(32), "hrss"))
    with pytest.raises(DataIntegrityError):
        other.sums_many([[A, B]], ["monthly_pension", "monthly_wage"])

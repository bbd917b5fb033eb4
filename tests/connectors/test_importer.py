import datetime as dt
from pathlib import Path

import pytest

from hedui.connectors.errors import ImportRejected
from hedui.connectors.importer import import_holdings, import_register, read_holdings
from hedui.connectors.integrity import RowSeal
from hedui.connectors.store import HoldingStore, RegisterStore, open_engine
from hedui.core.deployment import BANK, kind_of
from hedui.core.resident_id import make
from tests.tokenizer import LocalTokenizer

TODAY = dt.date(2026, 11, 22)
A = make("330106", dt.date(1970, 3, 4), 11)
B = make("330106", dt.date(1972, 5, 6), 22)
KEY = LocalTokenizer("bank-01")
SEAL = RowSeal(bytes(32), "bank-01")


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_rows_of_one_person_are_added_and_stored_by_token(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "bank-01.csv",
        f"id_number,deposits,wealth_products\n{A},100,5\n{A.value.lower()},250,0\n{B},7,0\n",
    )
    db = tmp_path / "bank.sqlite"
    store = HoldingStore(open_engine(f"sqlite:///{db}"), SEAL)
    assert import_holdings(f, store, BANK, KEY, today=TODAY) == 2
    assert store.sums_many([[KEY.token(A)]], BANK.field_names)[0] == {
        "deposits": 350,
        "wealth_products": 5,
    }
    assert store.sums_many([[KEY.token(A), KEY.token(B)]], BANK.field_names)[0]["deposits"] == 357
    assert store.sums_many([[bytes(32)]], BANK.field_names)[0] == {
        "deposits": 0,
        "wealth_products": 0,
    }
    blob = b"".join(p.read_bytes() for p in tmp_path.glob("bank.sqlite*"))
    assert A.value.encode() not in blob and B.value.encode() not in blob


def test_columns_may_come_in_any_order(tmp_path: Path) -> None:
    f = write(tmp_path, "x.csv", f"id_number,wealth_products,deposits\n{A},1,2\n")
    totals = read_holdings(f, BANK, KEY, today=TODAY)
    assert totals[KEY.token(A)] == {"deposits": 2, "wealth_products": 1}


@pytest.mark.parametrize(
    ("body", "line", "reason"),
    [
        (f"{A},12.50,0", 2, "not a non-negative whole number"),
        (f"{A},-1,0", 2, "not a non-negative whole number"),
        (f"{A},1", 2, "2 columns"),
        ("110105194912310021,1,0", 2, "check character"),
        (f"{A},1,0\n{B},x,0", 3, "deposits"),
        (f"{A},{10**16},0", 2, "exceeds the declared maximum"),
    ],
)
def test_bad_rows_name_file_line_and_reason_and_import_nothing(
    tmp_path: Path, body: str, line: int, reason: str
) -> None:
    db = tmp_path / "bank.sqlite"
    store = HoldingStore(open_engine(f"sqlite:///{db}"), SEAL)
    good = write(tmp_path, "good.csv", f"id_number,deposits,wealth_products\n{A},999,0\n")
    import_holdings(good, store, BANK, KEY, today=TODAY)
    bad = write(tmp_path, "bank-01.csv", f"id_number,deposits,wealth_products\n{body}\n")
    with pytest.raises(ImportRejected) as info:
        import_holdings(bad, store, BANK, KEY, today=TODAY)
    assert f"bank-01.csv:{line}:" in str(info.value) and reason in str(info.value)
    assert store.sums_many([[KEY.token(A)]], BANK.field_names)[0]["deposits"] == 999  # unchanged


@pytest.mark.parametrize(
    "header",
    [
        "id,deposits,wealth_products",
        "id_number,deposits",
        "id_number,deposits,wealth_products,extra",
    ],
)
def test_wrong_header_is_rejected(tmp_path: Path, header: str) -> None:
    f = write(tmp_path, "h.csv", f"{header}\n")
    with pytest.raises(
        ImportRejected, match=r"h\.csv:1: header must be id_number,deposits,wealth_products"
    ):
        read_holdings(f, BANK, KEY, today=TODAY)


def test_not_utf8_and_empty_files(tmp_path: Path) -> None:
    f = tmp_path / "bin.csv"
    f.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ImportRejected, match="not UTF-8"):
        read_holdings(f, kind_of("tax"), KEY, today=TODAY)
    with pytest.raises(ImportRejected, match="empty"):
        read_holdings(write(tmp_path, "e.csv", ""), kind_of("tax"), KEY, today=TODAY)


def test_register_import_and_lookup(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "registry.csv",
        f"household_id,id_number,relation,birth_date\nH1,{B},spouse,1972-05-06\nH1,{A},head,1970-03-04\n",
    )
    store = RegisterStore(open_engine(f"sqlite:///{tmp_path / 'r.sqlite'}"))
    assert import_register(f, store, today=TODAY) == 2
    (members,) = store.households_of([B.value])
    assert [m.relation for m in members] == ["head", "spouse"]
    assert store.households_of([make("330106", dt.date(1990, 1, 1), 1).value]) == [[]]


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        ("H1,{A},head,1970-03-04\nH1,{A},spouse,1970-03-04", "already listed on line 2"),
        ("H1,{A},boss,1970-03-04", "relation 'boss'"),
        ("H1,{A},head,1970-3-4", "not a date"),
        ("H1,{A},head,1971-03-04", "differs from the birth date in the ID"),
        ("H1,{A},spouse,1970-03-04", "has 0 heads"),
        ("H1,{A},head,1970-03-04\nH1,{B},head,1972-05-06", "has 2 heads"),
    ],
)
def test_register_rejections(tmp_path: Path, rows: str, reason: str) -> None:
    f = write(
        tmp_path,
        "registry.csv",
        "household_id,id_number,relation,birth_date\n" + rows.format(A=A, B=B) + "\n",
    )
    with pytest.raises(ImportRejected, match=reason):
        import_register(
            f, RegisterStore(open_engine(f"sqlite:///{tmp_path / 'r.sqlite'}")), today=TODAY
        )

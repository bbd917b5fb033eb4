"""Issue #24 item 5: free text that cannot carry an ID number. The seven encodings that passed
the earlier check (17 digits without the check character, Chinese numerals, ``+``- and
``#``-separated digits, reversed, Arabic-Indic digits, parenthesised) are refused in every field
of caller-chosen text, and the values the clients and the test-suite use are not."""

from __future__ import annotations

import datetime as dt

import pytest

from hedui.core.resident_id import (
    CASE_NUMBER,
    CASEWORKER_ID,
    NOTE,
    REQUEST_ID,
    FreeText,
    fold_digits,
    longest_digit_run,
    looks_like_id,
    make,
)

ID = make("330106", dt.date(1970, 3, 4), 11).value  # 33010619700304011 + check character
_CJK = dict(zip("0123456789", "〇一二三四五六七八九", strict=True))
_CJK_ZERO = dict(zip("0123456789", "零一二三四五六七八九", strict=True))
_FINANCIAL = dict(zip("0123456789", "零壹贰叁肆伍陆柒捌玖", strict=True))
_PARENTHESISED = {str(d): chr(0x2474 + d - 1) if d else "(0)" for d in range(10)}  # ⑴ … ⑼


def _map(table: dict[str, str], text: str) -> str:
    return "".join(table.get(c, c) for c in text)


def _shift(text: str, zero: int) -> str:
    return "".join(chr(zero + int(c)) if c.isdigit() else c for c in text)


# the seven encodings of the issue (and variants of each), all of the same number
ENCODINGS = {
    # 1. 17 digits without the check character
    "seventeen": ID[:17],
    "seventeen_in_text": f"ref{ID[:17]}ok",
    "seventeen_grouped": f"{ID[:6]}-{ID[6:14]}-{ID[14:17]}",
    # 2. Chinese numerals
    "chinese": _map(_CJK, ID[:17]),
    "chinese_ling": _map(_CJK_ZERO, ID),
    "chinese_commas": "、".join(_map(_CJK, ID[:17])),
    "financial": _map(_FINANCIAL, ID[:17]),
    # 3. "+"-separated
    "plus": "+".join(ID),
    "plus_groups": f"{ID[:6]}+{ID[6:14]}+{ID[14:]}",
    # 4. "#"-separated
    "hash": "#".join(ID[:17]),
    "hash_groups": f"{ID[:6]}#{ID[6:14]}#{ID[14:]}",
    # 5. reversed
    "reversed": ID[::-1],
    "reversed_17": ID[:17][::-1],
    "reversed_plus": "+".join(ID[::-1]),
    "reversed_groups": f"{ID[14:][::-1]}-{ID[6:14][::-1]}-{ID[:6][::-1]}",
    # 6. Arabic-Indic digits (and their Persian and Devanagari cousins)
    "arabic_indic": _shift(ID[:17], 0x0660),
    "persian": _shift(ID, 0x06F0),
    "devanagari": _shift(ID[:17], 0x0966),
    # 7. parenthesised
    "parenthesised": "".join(f"({c})" for c in ID[:17]),
    "parenthesised_unicode": _map(_PARENTHESISED, ID[:17]),
    "circled": _map({str(d): chr(0x2460 + d - 1) if d else "⓪" for d in range(10)}, ID[:17]),
    # and what the earlier check already caught
    "full_width": _shift(ID[:17], 0xFF10) + "Ｘ",
    "spaced": f"{ID[:6]} {ID[6:14]} {ID[14:]}",
    "zero_width": "\u200b".join(ID[:17]),
}

KINDS = {
    "request_id": REQUEST_ID,
    "caseworker_id": CASEWORKER_ID,
    "case_number": CASE_NUMBER,
    "note": NOTE,
}


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_every_encoding_of_an_id_is_recognised(name: str) -> None:
    text = ENCODINGS[name]
    assert looks_like_id(text), name
    assert looks_like_id(text[::-1]), name  # and backwards
    assert looks_like_id(f"已走访，{text}，复核"), name  # and inside prose


@pytest.mark.parametrize("name", sorted(ENCODINGS))
@pytest.mark.parametrize("field", sorted(KINDS))
def test_every_field_refuses_every_encoding_without_repeating_it(name: str, field: str) -> None:
    text = ENCODINGS[name]
    problem = KINDS[field].problem(text)
    assert problem is not None and "resident ID number" in problem, (field, name)
    assert text not in problem and ID[:6] not in problem and fold_digits(text) not in problem


def test_folding_and_runs() -> None:
    assert fold_digits("٣３三叁⑶❸") == "333" + "3" + "(3)" + "3"
    assert longest_digit_run("3+3+0") == 3
    assert longest_digit_run("2026.03.04-2026.12.31") == 4  # groups of 4 stand alone
    for text in ENCODINGS.values():  # the runs are the same read backwards
        assert longest_digit_run(text) == longest_digit_run(text[::-1])
    assert longest_digit_run("1" * 15) == 15 and looks_like_id("9" * 15)  # any 15 digits
    assert not looks_like_id("9" * 14)


LEGITIMATE = {
    REQUEST_ID: [
        "recheck-123456789012-12345",  # clients/recheck.py: recheck-<12 hex>-<line>
        "recheck-999999999999-999999",
        "recheck-a99999999999-99999",
        "enrol-999999999999-123456",  # clients/monitoring_cli.py
        "monitor-event-123456789",  # server/monitor.py
        "cli-12345678-1234-4123-8123-123456789012",  # clients/cli.py: cli-<uuid4>
        "load-1234abcd-42",
        "fuzz-verify-17-0123abcd",
        "r-1",
        "R-7",
        "x",
        "req-000000042",
        "bench-enrol-0123456789ab-3",
        "2025-11-24T12:00:00",
        "a" * 128,
    ],
    CASEWORKER_ID: ["", "zhang.wei", "li_na", "zw@hz.gov.cn", "cw-0042"],
    CASE_NUMBER: [
        "2026-001",
        "C-9",
        "case-1",
        "case-H000123",
        "民政〔2026〕12号",
        "杭民（2026）第3号",
        "浙民发[2026]1号",
        "HZ 2026/0042",
        "二〇二六年第十二号",
        "复核-２０２６-００１",
        "recheck-authorisation",
    ],
    NOTE: [
        "",
        "已走访，2026年3月起就业，月收入约３０００元。\n下次复核 2026.03.04-2026.12.31",
        "visited; phone 0571-8888 8888, +86 138-0013-8000 (50%)",
        "三三两两，一一核实",
        "x" * 500,
    ],
}


@pytest.mark.parametrize(
    ("kind", "value"), [(k, v) for k, values in LEGITIMATE.items() for v in values]
)
def test_legitimate_values_pass(kind: FreeText, value: str) -> None:
    assert kind.problem(value) is None, value


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        (REQUEST_ID, ""),
        (REQUEST_ID, "a b"),
        (REQUEST_ID, "a/b"),
        (REQUEST_ID, "名字"),
        (REQUEST_ID, "a" * 129),
        (CASEWORKER_ID, "intake/zhang"),
        (CASEWORKER_ID, "zhang wei"),
        (CASEWORKER_ID, "a" * 65),
        (CASE_NUMBER, ""),
        (CASE_NUMBER, "case\t1"),
        (CASE_NUMBER, "case+1"),
        (CASE_NUMBER, "٣-1"),
        (NOTE, "a\x00b"),
        (NOTE, "a\u200bb"),
        (NOTE, "٣ visits"),
        (NOTE, "x" * 501),
    ],
)
def test_outside_the_character_set_is_refused(kind: FreeText, value: str) -> None:
    problem = kind.problem(value)
    assert problem is not None
    assert value not in problem or len(value) < 2

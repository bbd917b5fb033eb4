import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hedui.core.errors import InvalidResidentId
from hedui.core.resident_id import check_character, make, parse

TODAY = dt.date(2026, 11, 22)
# The worked example of GB 11643-1999 Appendix A: 11010519491231002 → check character X.
STANDARD_EXAMPLE = "11010519491231002X"


def test_standard_example_check_character() -> None:
    assert check_character(STANDARD_EXAMPLE[:17]) == "X"
    assert parse(STANDARD_EXAMPLE, today=TODAY).value == STANDARD_EXAMPLE


def test_second_published_example() -> None:
    # GB 11643-1999 Appendix A, second example: 440524188001010014.
    assert check_character("44052418800101001") == "4"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("11010519491231002x", STANDARD_EXAMPLE),  # lowercase x
        ("１１０１０５１９４９１２３１００２Ｘ", STANDARD_EXAMPLE),  # full-width digits and X
        ("  11010519491231002X\n", STANDARD_EXAMPLE),  # surrounding white space
        ("110105491231002", STANDARD_EXAMPLE),  # 15-digit legacy number converted
    ],
)
def test_normalisation(raw: str, expected: str) -> None:
    assert parse(raw, today=TODAY).value == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("110105194912310021", "check_character"),
        ("11010519491231002Y", "characters"),
        ("1101051949123100", "length"),
        ("1101051949123100211", "length"),
        ("11010519490230002X", "birth_date"),  # 30 February
        ("110105194913010026", "birth_date"),  # month 13
        ("010105194912310021", "region"),
        ("1" * 65, "too_long"),
        ("1" * 1_000_000, "too_long"),
        ("11010520991231002X", "birth_date"),  # in the future
        ("11010A19491231002X", "characters"),
    ],
)
def test_rejections(raw: str, reason: str) -> None:
    with pytest.raises(InvalidResidentId) as info:
        parse(raw, today=TODAY)
    assert info.value.reason == reason
    assert str(info.value)


def test_future_birth_date_depends_on_today() -> None:
    rid = make("330106", dt.date(2026, 11, 23), 11)
    with pytest.raises(InvalidResidentId):
        parse(rid.value, today=TODAY)
    assert parse(rid.value, today=dt.date(2026, 11, 23)) == rid


def test_masked_hides_the_number() -> None:
    rid = parse(STANDARD_EXAMPLE, today=TODAY)
    assert rid.masked() == "110**************X"
    assert STANDARD_EXAMPLE not in repr(rid)


@given(
    region=st.sampled_from(["110105", "330106", "440305", "650102"]),
    birth=st.dates(min_value=dt.date(1900, 1, 1), max_value=TODAY),
    seq=st.integers(0, 999),
)
def test_made_ids_round_trip_and_any_digit_change_is_caught(
    region: str, birth: dt.date, seq: int
) -> None:
    rid = make(region, birth, seq)
    assert parse(rid.value, today=TODAY) == rid
    body = rid.value[:17]
    changed = body[:16] + str((int(body[16]) + 1) % 10) + rid.value[17]
    with pytest.raises(InvalidResidentId):
        parse(changed, today=TODAY)


# One county of every province-level code of GB/T 2260 (11–15, 21–23, 31–37, 41–46, 50–54,
# 61–65, 71, 81–83); 500106 is 重庆市沙坪坝区, which the old first-digit check refused.
PROVINCES = {
    "11": "110105", "12": "120101", "13": "130102", "14": "140105", "15": "150102",
    "21": "210102", "22": "220102", "23": "230102",
    "31": "310104", "32": "320102", "33": "330106", "34": "340102", "35": "350102",
    "36": "360102", "37": "370102",
    "41": "410102", "42": "420102", "43": "430102", "44": "440103", "45": "450102",
    "46": "460105",
    "50": "500106", "51": "510104", "52": "520102", "53": "530102", "54": "540102",
    "61": "610102", "62": "620102", "63": "630102", "64": "640104", "65": "650102",
    "71": "710000", "81": "810000", "82": "820000", "83": "830000",
}  # fmt: skip


def test_every_province_code_is_listed() -> None:
    from hedui.core.resident_id import PROVINCE_CODES

    assert set(PROVINCES) == PROVINCE_CODES


@pytest.mark.parametrize("region", sorted(PROVINCES.values()))
def test_an_id_of_every_province_parses(region: str) -> None:
    eighteen = make(region, dt.date(1968, 3, 4), 123).value
    assert parse(eighteen, today=TODAY).value == eighteen
    legacy = region + "680304123"  # the 15-digit form of the same person
    assert parse(legacy, today=TODAY).value == eighteen


@pytest.mark.parametrize("province", ["10", "16", "20", "24", "30", "38", "47", "49", "55", "60", "66", "70", "72", "80", "84", "90", "99"])  # fmt: skip
def test_codes_of_no_province_are_refused(province: str) -> None:
    first17 = f"{province}0102" + "19680304123"
    with pytest.raises(InvalidResidentId) as info:
        parse(first17 + check_character(first17), today=TODAY)
    assert info.value.reason == "region"


def test_today_is_the_deployment_date_not_the_machine_date(monkeypatch) -> None:
    """At 07:00 Beijing time it is still yesterday in UTC: a newborn of this morning is valid."""
    from hedui.core import clock, resident_id

    morning = dt.datetime(2026, 11, 24, 7, 0, tzinfo=dt.UTC) - dt.timedelta(hours=8)
    monkeypatch.setattr(resident_id, "DEPLOYMENT", clock.fixed(morning))
    newborn = make("500106", dt.date(2026, 11, 24), 2)
    assert morning.date() == dt.date(2026, 11, 23)  # the machine's UTC date
    assert parse(newborn.value).value == newborn.value
    assert clock.fixed(morning).show(int(morning.timestamp() * 1000)) == (
        "2026-11-24 07:00:00 +08:00"
    )


def test_free_text_holding_an_id_is_recognised_however_it_is_written() -> None:
    """Issue #11: free text that holds an ID number is refused before it is logged."""
    from hedui.core.resident_id import looks_like_id

    n = make("330106", dt.date(1970, 3, 4), 11).value
    wide = "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in n)
    for text in (n, f"note {n.lower()}", f"授权书 {wide}", f"{n[:6]} {n[6:14]} {n[14:]}",
                 f"{n[:6]}-{n[6:14]}-{n[14:]}", n[:6] + n[8:17]):  # fmt: skip
        assert looks_like_id(text), text
    for text in ("recheck-123456789012-12345", "2025-11-24 12:00:00", "case 2025-000123", ""):
        assert not looks_like_id(text), text

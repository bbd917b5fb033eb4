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

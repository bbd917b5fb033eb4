"""The Chinese text of every rule is Chinese: no variable names, field names, connector ids or
English words in ``message_zh`` / ``title_zh`` (numbers, units such as 元 and punctuation stay)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping

import pytest

from hedui.core.deployment import ALL_FIELDS, DEPARTMENT_KINDS
from hedui.core.policy.book import PROGRAMS, PolicyBook
from hedui.core.policy.engine import (
    FIELD_ZH,
    SOURCE_ZH,
    HouseholdFacts,
    Member,
    RuleResult,
    undecided,
)

BOOK = PolicyBook.builtin()
AS_OF = dt.date(2025, 8, 1)
S = 126000
ASCII_LETTER = re.compile(r"[A-Za-z]")


def facts(
    ages: tuple[int, ...],
    totals: Mapping[str, int] | None = None,
    missing: Mapping[str, tuple[str, ...]] | None = None,
) -> HouseholdFacts:
    missing = dict(missing or {})
    members = tuple(
        Member("head" if i == 0 else "other", AS_OF.replace(year=AS_OF.year - age))
        for i, age in enumerate(ages)
    )
    values = {f: (totals or {}).get(f, 0) for f in ALL_FIELDS if f not in missing}
    return HouseholdFacts(members, values, missing)


HOUSEHOLDS = {
    "no income, nothing owned": facts((70,)),
    "income below the line": facts((40, 38, 10), {"monthly_wage": 2 * S}),
    "income above the line": facts((40,), {"monthly_wage": 10 * S, "deposits": 10**9}),
    "sources disagree": facts((40,), {"monthly_wage": S - 1, "annual_taxable_income": 12 * S}),
    "tax only": facts((80,), {"annual_taxable_income": 1200}),
    "owns too much": facts(
        (40, 38),
        {
            "residential_properties": 2,
            "commercial_properties": 1,
            "vehicles": 2,
            "enterprises": 1,
            "securities_value": 10**9,
        },
    ),
    "heavy expenditure": facts(
        (40, 38, 12),
        {"monthly_wage": S, "annual_out_of_pocket": 30 * S, "annual_tuition": 2 * S},
    ),
    "light expenditure": facts((40,), {"monthly_wage": 3 * S, "annual_out_of_pocket": 100}),
    "working age with a disability": facts((30, 60), {"severe_disability_members": 1}),
    "departments and banks missing": facts(
        (40, 38),
        missing={
            "monthly_wage": ("hrss",),
            "monthly_pension": ("hrss",),
            "monthly_unemployment_benefit": ("hrss",),
            "annual_taxable_income": ("tax",),
            "deposits": ("bank-07", "bank-23"),
            "wealth_products": ("bank-07",),
            "residential_properties": ("realestate",),
            "vehicles": ("vehicles",),
            "enterprises": ("business",),
            "annual_out_of_pocket": ("medical",),
            "severe_disability_members": ("disability",),
        },
    ),
    "the custodian refused, a field has no source": facts(
        (50,),
        missing={
            "deposits": ("key custodian: quota exceeded for this caller",),
            "annual_land_income": ("agriculture",),
        },
    ),
    "fields with no source at all": HouseholdFacts(
        (Member("head", dt.date(1960, 1, 1)),), {"monthly_wage": 0}
    ),
    "a connector this deployment does not know": facts(
        (40,), missing={"insurance_cash_value": ("pension-fund-x",)}
    ),
}


def _results() -> list[tuple[str, RuleResult]]:
    out = []
    for program in PROGRAMS:
        for region in BOOK.regions:
            for label, household in HOUSEHOLDS.items():
                ev = BOOK.apply(program, region, household, AS_OF).evaluation
                out += [(f"{program}/{region}/{label}/{r.id}", r) for r in ev.rules]
    return out


RESULTS = _results()


def test_every_rule_of_every_programme_is_covered() -> None:
    ids = {(name.split("/")[0], r.id) for name, r in RESULTS}
    assert {p for p, _ in ids} == set(PROGRAMS)
    outcomes = {r.outcome for _, r in RESULTS}
    assert len(outcomes) == 3  # passed, failed and undecided texts are all looked at
    assert any(r.missing_sources for _, r in RESULTS)


@pytest.mark.parametrize(("name", "result"), RESULTS, ids=[n for n, _ in RESULTS])
def test_chinese_text_has_no_latin_letters(name: str, result: RuleResult) -> None:
    for text in (result.message_zh, result.title_zh):
        assert text, name
        assert not ASCII_LETTER.search(text), f"{name}: {text}"
    assert result.message_en and result.title_en


@pytest.mark.parametrize(
    ("source", "word"),
    [
        ("hrss", "人社"),
        ("tax", "税务"),
        ("bank-07", "银行"),
        ("key custodian: refused", "密钥"),
        ("key custodian: 1 of its sources did not answer", "密钥"),
        # a household a connector marked: the custodian's refusal names the connector
        ("key custodian: hrss: stored data fails its integrity check", "人社"),
        ("key custodian: bank-07: a total is above its declared maximum", "07号银行"),
        ("no source for deposits", "存款"),
    ],
)
def test_missing_sources_are_named_in_chinese(source: str, word: str) -> None:
    r = undecided("x", (source,), "fen", "家庭金融资产", "Household financial assets")
    assert word in r.message_zh and not ASCII_LETTER.search(r.message_zh), r.message_zh
    assert source in r.message_en  # the English text keeps the exact source
    assert r.missing_sources == (source,)


def test_every_connector_kind_and_field_has_a_chinese_name() -> None:
    assert set(DEPARTMENT_KINDS) <= set(SOURCE_ZH)
    assert set(ALL_FIELDS) <= set(FIELD_ZH)
    for name in (*SOURCE_ZH.values(), *FIELD_ZH.values()):
        assert not ASCII_LETTER.search(name), name

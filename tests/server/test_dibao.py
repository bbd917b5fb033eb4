"""Each dibao rule at its boundaries: one fen below, equal, one fen above."""

import datetime as dt

import pytest

from hedui.core.policy.book import PolicyBook
from hedui.core.policy.engine import Decision, HouseholdFacts, Member, Outcome, yuan
from hedui.server.errors import PolicyError

BOOK = PolicyBook.builtin()
AS_OF = dt.date(2025, 8, 1)
S = 126000
FIELDS = (
    "monthly_wage monthly_pension monthly_unemployment_benefit annual_taxable_income "
    "annual_land_income deposits wealth_products securities_value insurance_cash_value "
    "residential_properties commercial_properties vehicles enterprises"
).split()


def household(h: int, **totals: int) -> HouseholdFacts:
    members = tuple(
        Member("head" if i == 0 else "child", dt.date(1980 + i, 1, 1)) for i in range(h)
    )
    return HouseholdFacts(members, {f: totals.get(f, 0) for f in FIELDS})


def run(facts: HouseholdFacts, as_of: dt.date = AS_OF):
    return BOOK.apply("dibao", "demo", facts, as_of).evaluation


def rule(ev, rule_id: str):
    return next(r for r in ev.rules if r.id == rule_id)


@pytest.mark.parametrize(
    ("wage_delta", "outcome"), [(-1, Outcome.PASSED), (0, Outcome.FAILED), (1, Outcome.FAILED)]
)
@pytest.mark.parametrize("h", [1, 3, 6])
def test_income_line(h: int, wage_delta: int, outcome: Outcome) -> None:
    ev = run(household(h, monthly_wage=h * S + wage_delta))
    assert rule(ev, "income").outcome is outcome
    assert rule(ev, "income").threshold == h * S


def test_income_sums_every_hrss_source_and_land() -> None:
    line = 2 * S
    ev = run(
        household(
            2,
            monthly_wage=100,
            monthly_pension=200,
            monthly_unemployment_benefit=300,
            annual_land_income=12 * (line - 600),
        )
    )
    assert rule(ev, "income").outcome is Outcome.FAILED
    ev = run(
        household(
            2,
            monthly_wage=100,
            monthly_pension=200,
            monthly_unemployment_benefit=300,
            annual_land_income=12 * (line - 600) - 12,
        )
    )
    assert rule(ev, "income").outcome is Outcome.PASSED
    assert rule(ev, "income").value == line - 1


@pytest.mark.parametrize(
    ("tax_annual", "outcome"),
    [
        (12 * (S - 1), Outcome.PASSED),  # tax also below the line
        (12 * S - 1, Outcome.PASSED),  # 12*S - 1 // 12 = S - 1
        (12 * S, Outcome.UNDECIDED),  # tax reaches the line, hrss does not: sources disagree
        (12 * S + 1, Outcome.UNDECIDED),
    ],
)
def test_tax_income_makes_sources_disagree(tax_annual: int, outcome: Outcome) -> None:
    ev = run(household(1, monthly_wage=S - 1, annual_taxable_income=tax_annual))
    assert rule(ev, "income").outcome is outcome
    if outcome is Outcome.UNDECIDED:
        assert ev.decision is Decision.NEEDS_REVIEW
        assert "disagree" in rule(ev, "income").message_en


@pytest.mark.parametrize(
    ("delta", "outcome"), [(-1, Outcome.PASSED), (0, Outcome.PASSED), (1, Outcome.FAILED)]
)
@pytest.mark.parametrize(
    "field", ["deposits", "wealth_products", "securities_value", "insurance_cash_value"]
)
def test_financial_assets_limit(field: str, delta: int, outcome: Outcome) -> None:
    h = 2
    limit = h * 24 * S
    ev = run(household(h, **{field: limit + delta}))
    r = rule(ev, "financial_assets")
    # one source's own figure is never disclosed: pass or fail against the limit only
    assert (r.outcome, r.value, r.threshold) == (outcome, None, limit)
    if delta:  # (at delta 0 the figure is the limit, which is shown)
        assert yuan(limit + delta) not in r.message_en


def test_financial_assets_are_summed() -> None:
    limit = 24 * S
    parts = dict(
        deposits=limit // 4,
        wealth_products=limit // 4,
        securities_value=limit // 4,
        insurance_cash_value=limit - 3 * (limit // 4),
    )
    assert rule(run(household(1, **parts)), "financial_assets").outcome is Outcome.PASSED
    parts["deposits"] += 1
    assert rule(run(household(1, **parts)), "financial_assets").outcome is Outcome.FAILED


@pytest.mark.parametrize(
    ("res", "com", "outcome"),
    [
        (0, 0, Outcome.PASSED),
        (1, 0, Outcome.PASSED),
        (2, 0, Outcome.FAILED),
        (0, 1, Outcome.FAILED),
        (1, 1, Outcome.FAILED),
    ],
)
def test_real_estate(res: int, com: int, outcome: Outcome) -> None:
    ev = run(household(3, residential_properties=res, commercial_properties=com))
    assert rule(ev, "real_estate").outcome is outcome


@pytest.mark.parametrize(
    ("field", "rule_id"), [("vehicles", "vehicles"), ("enterprises", "business")]
)
@pytest.mark.parametrize(
    ("count", "outcome"), [(0, Outcome.PASSED), (1, Outcome.FAILED), (2, Outcome.FAILED)]
)
def test_none_allowed(field: str, rule_id: str, count: int, outcome: Outcome) -> None:
    assert rule(run(household(1, **{field: count})), rule_id).outcome is outcome


@pytest.mark.parametrize(
    ("income", "benefit"),
    [(0, 3 * S), (1, 3 * S), (99, 3 * S), (100, 3 * S - 100), (101, 3 * S - 100), (3 * S - 1, 100)],
)
def test_benefit_rounded_up_to_whole_yuan(income: int, benefit: int) -> None:
    ev = run(household(3, monthly_pension=income))
    assert ev.decision is Decision.ELIGIBLE
    assert ev.benefit_fen == benefit


def test_ineligible_pays_nothing() -> None:
    ev = run(household(2, vehicles=1))
    assert ev.decision is Decision.INELIGIBLE and ev.benefit_fen == 0


@pytest.mark.parametrize(
    ("as_of", "standard"),
    [
        (dt.date(2023, 7, 1), 110000),
        (dt.date(2024, 6, 30), 110000),
        (dt.date(2024, 7, 1), 120000),
        (dt.date(2025, 6, 30), 120000),
        (dt.date(2025, 7, 1), 126000),
        (dt.date(2026, 11, 22), 126000),
    ],
)
def test_standard_by_date(as_of: dt.date, standard: int) -> None:
    ev = run(household(1), as_of)
    assert rule(ev, "income").threshold == standard
    assert ev.benefit_fen == standard


def test_date_before_first_standard_is_refused() -> None:
    with pytest.raises(PolicyError, match="too early"):
        run(household(1), dt.date(2023, 6, 30))


def test_missing_source_makes_rules_undecided_never_passed() -> None:
    facts = household(2)
    totals = dict(facts.totals)
    del totals["deposits"]
    facts = HouseholdFacts(facts.members, totals, {"deposits": ("bank-07",)})
    ev = run(facts)
    r = rule(ev, "financial_assets")
    assert r.outcome is Outcome.UNDECIDED and r.missing_sources == ("bank-07",)
    assert "bank-07" in r.message_en
    assert ev.decision is Decision.NEEDS_REVIEW and ev.benefit_fen == 0


def test_missing_source_does_not_hide_a_failure() -> None:
    facts = household(2, vehicles=1)
    totals = dict(facts.totals)
    del totals["monthly_wage"]
    ev = run(HouseholdFacts(facts.members, totals, {"monthly_wage": ("hrss",)}))
    assert ev.decision is Decision.INELIGIBLE


def test_policy_version_changes_with_parameters() -> None:
    from hedui.core.policy.params import parse

    text = b'region = "demo"\n[parameters.dibao_standard]\nunit = "fen/person/month"\nvalues = [{ start = 2023-07-01, value = 100000, reference = "x" }]\n'
    other = PolicyBook({"demo": parse(text, "t")}, "demo")
    assert other.version("demo") != BOOK.version("demo")

"""最低生活保障 (dibao): the minimum living guarantee.

With S the standard per person per month in force on the application date, h the number of
registry members, and every figure a household total (fen per month unless noted):

- hrss = monthly_wage + monthly_pension + monthly_unemployment_benefit
- tax = annual_taxable_income // 12, land = annual_land_income // 12
- income_low = hrss + land, income_high = max(hrss, tax) + land
- income: passed if income_high < h*S; failed if income_low >= h*S; else undecided
- financial_assets: deposits + wealth_products + securities_value + insurance_cash_value
  <= h * months * S
- real_estate: residential_properties <= 1 and commercial_properties == 0
- vehicles: vehicles == 0; business: enterprises == 0
- benefit when eligible: h*S - income_high, rounded up to whole yuan
"""

from __future__ import annotations

import datetime as dt

from hedui.server.policy.engine import (
    Decision,
    Evaluation,
    Figure,
    HouseholdFacts,
    Outcome,
    RuleResult,
    decide,
    round_up_to_yuan,
    undecided,
    yuan,
)
from hedui.server.policy.params import RegionParameters

NAME = "dibao"
INCOME_FIELDS = (
    "monthly_wage",
    "monthly_pension",
    "monthly_unemployment_benefit",
    "annual_taxable_income",
    "annual_land_income",
)
ASSET_FIELDS = ("deposits", "wealth_products", "securities_value", "insurance_cash_value")


def income_figures(facts: HouseholdFacts) -> tuple[int, int, tuple[Figure, ...]]:
    """(income_low, income_high, figures) of a household whose income sources all answered."""
    hrss = sum(facts.get(f) for f in INCOME_FIELDS[:3])
    tax = facts.get("annual_taxable_income") // 12
    land = facts.get("annual_land_income") // 12
    low, high = hrss + land, max(hrss, tax) + land
    figures = (
        Figure("hrss_monthly_income", hrss, "", 0, "fen"),
        Figure("tax_monthly_income", tax, "", 0, "fen"),
        Figure("land_monthly_income", land, "", 0, "fen"),
        Figure("income_low", low, "", 0, "fen"),
        Figure("income_high", high, "", 0, "fen"),
    )
    return low, high, figures


def income_rule(facts: HouseholdFacts, line: int, reference: str) -> tuple[RuleResult, int | None]:
    missing = facts.missing_for(INCOME_FIELDS)
    if missing:
        return undecided("income", missing, "fen", "家庭月收入", "Household monthly income"), None
    low, high, figures = income_figures(facts)
    if high < line:
        outcome, value, cmp = Outcome.PASSED, high, "<"
        zh = f"家庭月收入 {yuan(high)} 元，低于低保线 {yuan(line)} 元"
        en = f"household monthly income {yuan(high)} yuan is below the line of {yuan(line)} yuan"
    elif low >= line:
        outcome, value, cmp = Outcome.FAILED, low, ">="
        zh = f"家庭月收入至少 {yuan(low)} 元，不低于低保线 {yuan(line)} 元"
        en = f"household monthly income of at least {yuan(low)} yuan is not below the line of {yuan(line)} yuan"
    else:
        outcome, value, cmp = Outcome.UNDECIDED, high, "<"
        zh = f"收入来源不一致：人社口径 {yuan(low)} 元低于低保线 {yuan(line)} 元，税务口径 {yuan(high)} 元不低于"
        en = (
            f"income sources disagree: {yuan(low)} yuan (social security) is below the line of "
            f"{yuan(line)} yuan, {yuan(high)} yuan (tax) is not"
        )
    return (
        RuleResult(
            "income",
            outcome,
            value,
            line,
            cmp,
            "fen",
            zh,
            en,
            figures=figures,
            references=(reference,),
        ),
        high,
    )


def financial_assets_rule(
    facts: HouseholdFacts, limit: int, references: tuple[str, ...]
) -> RuleResult:
    missing = facts.missing_for(ASSET_FIELDS)
    if missing:
        return undecided(
            "financial_assets", missing, "fen", "家庭金融资产", "Household financial assets"
        )
    total = sum(facts.get(f) for f in ASSET_FIELDS)
    ok = total <= limit
    return RuleResult(
        "financial_assets",
        Outcome.PASSED if ok else Outcome.FAILED,
        total,
        limit,
        "<=",
        "fen",
        f"家庭金融资产 {yuan(total)} 元，{'未超过' if ok else '超过'}上限 {yuan(limit)} 元",
        f"household financial assets of {yuan(total)} yuan {'do not exceed' if ok else 'exceed'} "
        f"the limit of {yuan(limit)} yuan",
        references=references,
    )


def real_estate_rule(facts: HouseholdFacts, max_residential: int, reference: str) -> RuleResult:
    fields = ("residential_properties", "commercial_properties")
    missing = facts.missing_for(fields)
    if missing:
        return undecided("real_estate", missing, "count", "家庭房产", "Household real estate")
    res, com = (facts.get(f) for f in fields)
    ok = res <= max_residential and com == 0
    return RuleResult(
        "real_estate",
        Outcome.PASSED if ok else Outcome.FAILED,
        res,
        max_residential,
        "<=",
        "count",
        f"住宅 {res} 套（上限 {max_residential} 套），商业用房 {com} 套（上限 0 套）",
        f"{res} residential propert{'y' if res == 1 else 'ies'} (at most {max_residential}), "
        f"{com} commercial (none allowed)",
        figures=(
            Figure("residential_properties", res, "<=", max_residential, "count"),
            Figure("commercial_properties", com, "==", 0, "count"),
        ),
        references=(reference,),
    )


def none_allowed_rule(
    facts: HouseholdFacts, rule_id: str, field: str, zh: str, en: str
) -> RuleResult:
    missing = facts.missing_for((field,))
    if missing:
        return undecided(rule_id, missing, "count", zh, en)
    n = facts.get(field)
    ok = n == 0
    return RuleResult(
        rule_id,
        Outcome.PASSED if ok else Outcome.FAILED,
        n,
        0,
        "==",
        "count",
        f"{zh} {n}（不得拥有）",
        f"{en}: {n} (none allowed)",
    )


def evaluate(facts: HouseholdFacts, params: RegionParameters, as_of: dt.date) -> Evaluation:
    standard = params.get("dibao_standard", as_of)
    months = params.get("dibao_asset_months", as_of)
    max_res = params.get("dibao_max_residential", as_of)
    h = facts.size
    line = h * standard.value
    income, income_high = income_rule(facts, line, standard.reference)
    rules = (
        income,
        financial_assets_rule(facts, line * months.value, (standard.reference, months.reference)),
        real_estate_rule(facts, max_res.value, max_res.reference),
        none_allowed_rule(facts, "vehicles", "vehicles", "机动车辆", "Motor vehicles"),
        none_allowed_rule(facts, "business", "enterprises", "经营企业", "Enterprises"),
    )
    decision = decide(rules)
    benefit = 0
    if decision is Decision.ELIGIBLE and income_high is not None:
        benefit = round_up_to_yuan(line - income_high)
    return Evaluation(decision, benefit, rules)

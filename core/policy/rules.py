"""Rules that several programmes share: income against a line, assets, property, vehicles,
business. Each takes the household facts and the thresholds in force, and explains itself.

Income figures (household totals, fen per month):
hrss = monthly_wage + monthly_pension + monthly_unemployment_benefit;
tax = annual_taxable_income // 12; land = annual_land_income // 12;
income_low = hrss + land (what social security reports); income_high = max(hrss, tax) + land.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from hedui.core.policy.engine import Figure, HouseholdFacts, Outcome, RuleResult, undecided, yuan
from hedui.core.policy.params import DatedValue, RegionParameters

INCOME_FIELDS = (
    "monthly_wage",
    "monthly_pension",
    "monthly_unemployment_benefit",
    "annual_taxable_income",
    "annual_land_income",
)
ASSET_FIELDS = ("deposits", "wealth_products", "securities_value", "insurance_cash_value")
PROPERTY_FIELDS = ("residential_properties", "commercial_properties")


@dataclass(frozen=True)
class Income:
    low: int
    high: int
    figures: tuple[Figure, ...]
    low_fields: tuple[str, ...] = ()  # the fields each total is made of
    high_fields: tuple[str, ...] = ()


def income(facts: HouseholdFacts) -> Income | None:
    """The household's monthly income, or None when a source of it is missing."""
    if facts.missing_for(INCOME_FIELDS):
        return None
    hrss = sum(facts.get(f) for f in INCOME_FIELDS[:3])
    tax = facts.get("annual_taxable_income") // 12
    land = facts.get("annual_land_income") // 12
    low, high = hrss + land, max(hrss, tax) + land
    # a field counts as a source of a total only when it adds to it: land income under 12 fen a
    # year adds 0 a month, and a total shown as "two sources" would be hrss's own figure
    land_fields = ("annual_land_income",) if land else ()
    low_fields = (*INCOME_FIELDS[:3], *land_fields)
    high_fields = low_fields if hrss >= tax else ("annual_taxable_income", *land_fields)
    # household figures only: one department's own figure is never disclosed (DESIGN §1)
    figures = (
        Figure("income_low", low, "", 0, "fen", low_fields),
        Figure("income_high", high, "", 0, "fen", high_fields),
    )
    return Income(low, high, figures, low_fields, high_fields)


def income_below(
    facts: HouseholdFacts,
    line: int,
    references: tuple[str, ...],
    *,
    rule_id: str = "income",
    zh_line: str = "低保线",
    en_line: str = "the line",
) -> RuleResult:
    """Passed if income_high < line; failed if income_low >= line; else undecided."""
    title = ("家庭月收入", "Household monthly income")
    inc = income(facts)
    if inc is None:
        return undecided(rule_id, facts.missing_for(INCOME_FIELDS), "fen", *title, references)
    low, high = inc.low, inc.high
    if high < line:
        outcome, value, cmp = Outcome.PASSED, high, "<"
        zh = f"家庭月收入 {yuan(high)} 元，低于{zh_line} {yuan(line)} 元"
        en = f"household monthly income {yuan(high)} yuan is below {en_line} of {yuan(line)} yuan"
    elif low >= line:
        outcome, value, cmp = Outcome.FAILED, low, ">="
        zh = f"家庭月收入至少 {yuan(low)} 元，不低于{zh_line} {yuan(line)} 元"
        en = f"household monthly income of at least {yuan(low)} yuan is not below {en_line} of {yuan(line)} yuan"
    else:
        outcome, value, cmp = Outcome.UNDECIDED, high, "<"
        zh = f"收入来源不一致：人社数据低于{zh_line} {yuan(line)} 元，税务数据不低于，需人工复核"
        en = (
            f"income sources disagree: social security puts the household below {en_line} of "
            f"{yuan(line)} yuan, tax records do not; needs review"
        )
    return RuleResult(
        rule_id,
        outcome,
        value,
        line,
        cmp,
        "fen",
        zh,
        en,
        figures=inc.figures,
        references=references,
        title_zh=title[0],
        title_en=title[1],
        value_fields=inc.low_fields if outcome is Outcome.FAILED else inc.high_fields,
        message_has_figures=outcome is not Outcome.UNDECIDED,
    )


def financial_assets(facts: HouseholdFacts, limit: int, references: tuple[str, ...]) -> RuleResult:
    title = ("家庭金融资产", "Household financial assets")
    missing = facts.missing_for(ASSET_FIELDS)
    if missing:
        return undecided("financial_assets", missing, "fen", *title, references)
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
        title_zh=title[0],
        title_en=title[1],
        value_fields=ASSET_FIELDS,
    )


def real_estate(facts: HouseholdFacts, max_residential: DatedValue) -> RuleResult:
    title = ("家庭房产", "Household real estate")
    refs = (max_residential.reference,)
    missing = facts.missing_for(PROPERTY_FIELDS)
    if missing:
        return undecided("real_estate", missing, "count", *title, refs)
    res, com = (facts.get(f) for f in PROPERTY_FIELDS)
    limit = max_residential.value
    ok = res <= limit and com == 0
    return RuleResult(
        "real_estate",
        Outcome.PASSED if ok else Outcome.FAILED,
        res,
        limit,
        "<=",
        "count",
        f"住宅 {res} 套（上限 {limit} 套），商业用房 {com} 套（上限 0 套）",
        f"{res} residential propert{'y' if res == 1 else 'ies'} (at most {limit}), "
        f"{com} commercial (none allowed)",
        figures=(
            Figure("residential_properties", res, "<=", limit, "count", PROPERTY_FIELDS[:1]),
            Figure("commercial_properties", com, "==", 0, "count", PROPERTY_FIELDS[1:]),
        ),
        references=refs,
        title_zh=title[0],
        title_en=title[1],
        value_fields=PROPERTY_FIELDS[:1],
    )


def at_most(
    facts: HouseholdFacts, rule_id: str, field: str, zh: str, en: str, limit: DatedValue
) -> RuleResult:
    refs = (limit.reference,)
    missing = facts.missing_for((field,))
    if missing:
        return undecided(rule_id, missing, "count", zh, en, refs)
    n, most = facts.get(field), limit.value
    ok = n <= most
    allowed_zh = "不得拥有" if most == 0 else f"上限 {most}"
    allowed_en = "none allowed" if most == 0 else f"at most {most}"
    return RuleResult(
        rule_id,
        Outcome.PASSED if ok else Outcome.FAILED,
        n,
        most,
        "<=",
        "count",
        f"{zh} {n}（{allowed_zh}）",
        f"{en}: {n} ({allowed_en})",
        references=refs,
        title_zh=zh,
        title_en=en,
        value_fields=(field,),
    )


def asset_rules(
    facts: HouseholdFacts, params: RegionParameters, as_of: dt.date
) -> tuple[RuleResult, ...]:
    """The asset, property, vehicle and business rules of dibao, which every programme applies.

    The asset limit is h * asset_months * S with S the dibao standard, whatever the programme.
    """
    standard = params.get("dibao_standard", as_of)
    months = params.get("dibao_asset_months", as_of)
    limit = facts.size * standard.value * months.value
    return (
        financial_assets(facts, limit, (standard.reference, months.reference)),
        real_estate(facts, params.get("dibao_max_residential", as_of)),
        at_most(
            facts,
            "vehicles",
            "vehicles",
            "机动车辆",
            "Motor vehicles",
            params.get("dibao_max_vehicles", as_of),
        ),
        at_most(
            facts,
            "business",
            "enterprises",
            "经营企业",
            "Enterprises",
            params.get("dibao_max_enterprises", as_of),
        ),
    )

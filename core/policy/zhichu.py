"""支出型困难家庭 (zhichu): households made poor by rigid expenditure. Status only.

R = annual_out_of_pocket + annual_tuition (rigid expenditure per year), A = 12 * income per
month. Eligible when R is at least p% of A (p dated, 60: R*100 >= A*60, i.e. R*5 >= A*3), the
income left after expenditure, income - R//12, is below h*S, and dibao's asset rules pass.
Both income figures are tried: a rule that passes on income_high and fails on income_low is
decided; one that passes on one and fails on the other is undecided (the sources disagree).
"""

from __future__ import annotations

import datetime as dt

from hedui.core.policy import rules
from hedui.core.policy.engine import (
    Evaluation,
    Figure,
    HouseholdFacts,
    Outcome,
    RuleResult,
    decide,
    undecided,
    yuan,
)
from hedui.core.policy.params import DatedValue, RegionParameters

NAME = "zhichu"
TITLE = ("支出型困难家庭", "expenditure-burdened household")
STANDARD = "dibao_standard"
EXPENDITURE_FIELDS = ("annual_out_of_pocket", "annual_tuition")


def _expenditure_share(rigid: int, inc: rules.Income, share: DatedValue) -> RuleResult:
    title = ("刚性支出占比", "Share of rigid expenditure")
    p = share.value

    def ok(monthly: int) -> bool:
        return rigid * 100 >= 12 * monthly * p

    if ok(inc.high):
        outcome = Outcome.PASSED
    elif not ok(inc.low):
        outcome = Outcome.FAILED
    else:
        outcome = Outcome.UNDECIDED
    annual = 12 * inc.high
    return RuleResult(
        "expenditure_share",
        outcome,
        rigid,
        annual * p // 100,
        ">=",
        "fen",
        f"年刚性支出 {yuan(rigid)} 元，{'达到' if outcome is Outcome.PASSED else '未确定达到' if outcome is Outcome.UNDECIDED else '未达到'}"
        f"年收入 {yuan(annual)} 元的 {p}%",
        f"rigid expenditure of {yuan(rigid)} yuan a year is "
        f"{'at least' if outcome is Outcome.PASSED else 'not surely' if outcome is Outcome.UNDECIDED else 'less than'} "
        f"{p}% of the annual income of {yuan(annual)} yuan",
        figures=(
            Figure("annual_income", annual, "", 0, "fen", inc.high_fields),
            Figure("rigid_expenditure", rigid, "", 0, "fen", EXPENDITURE_FIELDS),
        ),
        references=(share.reference,),
        title_zh=title[0],
        title_en=title[1],
        value_fields=EXPENDITURE_FIELDS,
        threshold_fields=inc.high_fields,
    )


def _net_income(rigid: int, inc: rules.Income, line: int, standard: DatedValue) -> RuleResult:
    title = ("扣除刚性支出后的家庭月收入", "Monthly income after rigid expenditure")
    monthly_cost = rigid // 12
    high, low = inc.high - monthly_cost, inc.low - monthly_cost
    if high < line:
        outcome, value, fields = Outcome.PASSED, high, inc.high_fields
    elif low >= line:
        outcome, value, fields = Outcome.FAILED, low, inc.low_fields
    else:
        outcome, value, fields = Outcome.UNDECIDED, high, inc.high_fields
    word_zh = {Outcome.PASSED: "低于", Outcome.FAILED: "不低于", Outcome.UNDECIDED: "可能不低于"}[
        outcome
    ]
    word_en = {
        Outcome.PASSED: "below",
        Outcome.FAILED: "not below",
        Outcome.UNDECIDED: "possibly not below",
    }[outcome]
    return RuleResult(
        "net_income",
        outcome,
        value,
        line,
        "<",
        "fen",
        f"扣除刚性支出后家庭月收入 {yuan(value)} 元，{word_zh}低保线 {yuan(line)} 元",
        f"monthly income after rigid expenditure, {yuan(value)} yuan, is {word_en} the line of {yuan(line)} yuan",
        references=(standard.reference,),
        title_zh=title[0],
        title_en=title[1],
        value_fields=(*fields, *EXPENDITURE_FIELDS),
        value_groups=(tuple(fields), EXPENDITURE_FIELDS),
    )


def evaluate(facts: HouseholdFacts, params: RegionParameters, as_of: dt.date) -> Evaluation:
    standard = params.get(STANDARD, as_of)
    share = params.get("zhichu_expenditure_share_percent", as_of)
    line = facts.size * standard.value
    inc = rules.income(facts)
    missing = facts.missing_for((*rules.INCOME_FIELDS, *EXPENDITURE_FIELDS))
    if inc is None or missing:
        first: tuple[RuleResult, ...] = (
            undecided(
                "expenditure_share",
                missing,
                "fen",
                "刚性支出占比",
                "Share of rigid expenditure",
                (share.reference,),
            ),
            undecided(
                "net_income",
                missing,
                "fen",
                "扣除刚性支出后的家庭月收入",
                "Monthly income after rigid expenditure",
                (standard.reference,),
            ),
        )
    else:
        rigid = sum(facts.get(f) for f in EXPENDITURE_FIELDS)
        first = (_expenditure_share(rigid, inc, share), _net_income(rigid, inc, line, standard))
    evaluated = (*first, *rules.asset_rules(facts, params, as_of))
    return Evaluation(decide(evaluated), 0, evaluated)

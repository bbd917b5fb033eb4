"""特困人员供养 (tekun): support for people with no ability to work, no income and no one
obliged to support them.

able = members aged working_age_min..working_age_max on the application date, minus
severe_disability_members (not below 0). Eligible when able == 0, income_high == 0 and dibao's
asset rules pass. Benefit: h*S*p//100 (p dated, 130: 1.3 times the dibao standard), rounded up
to whole yuan.
"""

from __future__ import annotations

import datetime as dt

from hedui.core.policy import rules
from hedui.core.policy.engine import (
    Decision,
    Evaluation,
    HouseholdFacts,
    Outcome,
    RuleResult,
    decide,
    round_up_to_yuan,
    undecided,
    yuan,
)
from hedui.core.policy.params import RegionParameters

NAME = "tekun"
TITLE = ("特困人员供养", "support for persons in extreme poverty")
STANDARD = "dibao_standard"


def _able(facts: HouseholdFacts, params: RegionParameters, as_of: dt.date) -> RuleResult:
    title = ("有劳动能力的成员", "Members able to work")
    lo, hi = params.get("tekun_working_age_min", as_of), params.get("tekun_working_age_max", as_of)
    refs = (lo.reference, hi.reference)
    missing = facts.missing_for(("severe_disability_members",))
    if missing:
        return undecided("able_to_work", missing, "count", *title, refs)
    working_age = sum(1 for m in facts.members if lo.value <= m.age_on(as_of) <= hi.value)
    able = max(0, working_age - facts.get("severe_disability_members"))
    ok = able == 0
    return RuleResult(
        "able_to_work",
        Outcome.PASSED if ok else Outcome.FAILED,
        able,
        0,
        "==",
        "count",
        f"{lo.value}至{hi.value}周岁成员 {working_age} 人，其中重度残疾 "
        f"{facts.get('severe_disability_members')} 人，有劳动能力 {able} 人（须为 0）",
        f"{working_age} member(s) aged {lo.value} to {hi.value}, "
        f"{facts.get('severe_disability_members')} with a severe disability: {able} able to work (must be 0)",
        references=refs,
        title_zh=title[0],
        title_en=title[1],
        value_fields=("severe_disability_members",),
    )


def _no_income(facts: HouseholdFacts, reference: str) -> RuleResult:
    title = ("家庭收入", "Household income")
    inc = rules.income(facts)
    if inc is None:
        return undecided(
            "no_income", facts.missing_for(rules.INCOME_FIELDS), "fen", *title, (reference,)
        )
    if inc.high == 0:
        outcome, value, fields = Outcome.PASSED, 0, inc.high_fields
    elif inc.low > 0:
        outcome, value, fields = Outcome.FAILED, inc.low, inc.low_fields
    else:
        outcome, value, fields = Outcome.UNDECIDED, inc.high, inc.high_fields
    zh = {
        Outcome.PASSED: "家庭无收入",
        Outcome.FAILED: f"家庭月收入 {yuan(value)} 元（须为 0）",
        Outcome.UNDECIDED: "收入来源不一致：人社数据无收入，税务数据有收入，需人工复核",
    }[outcome]
    en = {
        Outcome.PASSED: "the household has no income",
        Outcome.FAILED: f"household monthly income {yuan(value)} yuan (must be 0)",
        Outcome.UNDECIDED: "income sources disagree: none by social security, some by tax; needs review",
    }[outcome]
    return RuleResult(
        "no_income",
        outcome,
        value,
        0,
        "==",
        "fen",
        zh,
        en,
        figures=inc.figures,
        references=(reference,),
        title_zh=title[0],
        title_en=title[1],
        value_fields=fields,
        message_has_figures=outcome is Outcome.FAILED,
    )


def evaluate(facts: HouseholdFacts, params: RegionParameters, as_of: dt.date) -> Evaluation:
    standard = params.get(STANDARD, as_of)
    support = params.get("tekun_support_percent", as_of)
    evaluated = (
        _able(facts, params, as_of),
        _no_income(facts, support.reference),
        *rules.asset_rules(facts, params, as_of),
    )
    decision = decide(evaluated)
    benefit = 0
    if decision is Decision.ELIGIBLE:
        benefit = round_up_to_yuan(facts.size * standard.value * support.value // 100)
    return Evaluation(decision, benefit, evaluated)

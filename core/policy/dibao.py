"""最低生活保障 (dibao): the minimum living guarantee.

With S the standard per person per month in force on the application date and h the number of
registry members: income (see rules.py) passes if income_high < h*S, fails if income_low >= h*S,
else undecided; financial assets <= h * asset_months * S; at most one home and no commercial
property; no vehicle; no enterprise. Benefit when eligible: h*S - income_high, rounded up to
whole yuan.
"""

from __future__ import annotations

import datetime as dt

from hedui.core.policy import rules
from hedui.core.policy.engine import (
    Decision,
    Evaluation,
    HouseholdFacts,
    decide,
    round_up_to_yuan,
)
from hedui.core.policy.params import RegionParameters

NAME = "dibao"
TITLE = ("最低生活保障", "minimum living guarantee")
STANDARD = "dibao_standard"


def evaluate(facts: HouseholdFacts, params: RegionParameters, as_of: dt.date) -> Evaluation:
    standard = params.get(STANDARD, as_of)
    line = facts.size * standard.value
    income = rules.income_below(facts, line, (standard.reference,))
    evaluated = (income, *rules.asset_rules(facts, params, as_of))
    decision = decide(evaluated)
    benefit = 0
    if decision is Decision.ELIGIBLE and income.value is not None:
        benefit = round_up_to_yuan(line - income.value)
    return Evaluation(decision, benefit, evaluated)

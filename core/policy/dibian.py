"""低收入家庭 / 低边 (dibian): households just above the dibao line. Status only, no benefit.

As dibao, but the income line is h*S*p//100 with p the dated income percentage (150: 1.5 times
the dibao standard). The asset, property, vehicle and business rules are dibao's.
"""

from __future__ import annotations

import datetime as dt

from hedui.core.policy import rules
from hedui.core.policy.engine import Evaluation, HouseholdFacts, decide
from hedui.core.policy.params import RegionParameters

NAME = "dibian"
TITLE = ("低收入家庭（低边）", "low-income household")
STANDARD = "dibao_standard"


def evaluate(facts: HouseholdFacts, params: RegionParameters, as_of: dt.date) -> Evaluation:
    standard = params.get(STANDARD, as_of)
    percent = params.get("dibian_income_percent", as_of)
    line = facts.size * standard.value * percent.value // 100
    income = rules.income_below(
        facts,
        line,
        (standard.reference, percent.reference),
        zh_line="低收入线",
        en_line="the low-income line",
    )
    evaluated = (income, *rules.asset_rules(facts, params, as_of))
    return Evaluation(decide(evaluated), 0, evaluated)

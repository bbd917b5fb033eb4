"""An independent reading of the dibao rules of issue #2, computed straight from the CSV files.

It shares no code with hedui.core.policy on purpose: the end-to-end tests compare the two.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

STANDARDS = [("2023-07-01", 110000), ("2024-07-01", 120000), ("2025-07-01", 126000)]


def standard_on(as_of: str) -> int:
    return [v for start, v in STANDARDS if start <= as_of][-1]


def load(data: Path) -> tuple[dict[str, list[str]], dict[str, dict[str, int]]]:
    """(household id -> member IDs, person ID -> field totals summed over all files)."""
    households: dict[str, list[str]] = defaultdict(list)
    with (data / "registry.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            households[row["household_id"]].append(row["id_number"].upper())
    person: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for path in sorted(data.glob("*.csv")):
        if path.name == "registry.csv":
            continue
        with path.open(encoding="utf-8") as f:
            for row in csv.DictReader(f):
                pid = row.pop("id_number").upper()
                for k, v in row.items():
                    person[pid][k] += int(v)
    return dict(households), person


def expected(members: list[str], person: dict[str, dict[str, int]], as_of: str) -> dict:
    t: dict[str, int] = defaultdict(int)
    for m in members:
        for k, v in person.get(m, {}).items():
            t[k] += v
    h, s = len(members), standard_on(as_of)
    line = h * s
    hrss = t["monthly_wage"] + t["monthly_pension"] + t["monthly_unemployment_benefit"]
    tax = t["annual_taxable_income"] // 12
    land = t["annual_land_income"] // 12
    low, high = hrss + land, max(hrss, tax) + land
    income = True if high < line else (False if low >= line else None)
    assets = (
        t["deposits"] + t["wealth_products"] + t["securities_value"] + t["insurance_cash_value"]
    )
    rules = {
        "income": income,
        "financial_assets": assets <= h * 24 * s,
        "real_estate": t["residential_properties"] <= 1 and t["commercial_properties"] == 0,
        "vehicles": t["vehicles"] == 0,
        "business": t["enterprises"] == 0,
    }
    if False in rules.values():
        decision = "INELIGIBLE"
    elif None in rules.values():
        decision = "NEEDS_REVIEW"
    else:
        decision = "ELIGIBLE"
    benefit = -(-(line - high) // 100) * 100 if decision == "ELIGIBLE" else 0
    return {"decision": decision, "benefit_fen": benefit, "household_size": h, "rules": rules}

"""Rule tests as data: every case in tests/server/cases/*.yaml (household → decision, benefit)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from hedui.core.deployment import ALL_FIELDS
from hedui.core.policy.book import PolicyBook
from hedui.core.policy.engine import HouseholdFacts, Member
from hedui.server.errors import PolicyError

BOOK = PolicyBook.builtin()
CASES_DIR = Path(__file__).parent / "cases"


def _load() -> list[Any]:
    out = []
    for path in sorted(CASES_DIR.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for case in doc["cases"]:
            merged = {**doc["defaults"], **case}
            out.append(pytest.param(merged, id=f"{path.stem}: {case['name']}"))
    return out


CASES = _load()


def _members(case: dict[str, Any], as_of: dt.date) -> tuple[Member, ...]:
    births = [
        b if isinstance(b, dt.date) else dt.date.fromisoformat(b) for b in case.get("births", [])
    ]
    births += [as_of.replace(year=as_of.year - age) for age in case.get("ages", [])]
    return tuple(Member("head" if i == 0 else "other", b) for i, b in enumerate(births))


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 60
    sizes = {len(c.values[0].get("ages", [])) + len(c.values[0].get("births", [])) for c in CASES}
    assert set(range(1, 7)) <= sizes


@pytest.mark.parametrize("case", CASES)
def test_case(case: dict[str, Any]) -> None:
    as_of = (
        case["as_of"]
        if isinstance(case["as_of"], dt.date)
        else dt.date.fromisoformat(case["as_of"])
    )
    missing = {k: tuple(v) for k, v in case.get("missing", {}).items()}
    totals = {f: case.get("totals", {}).get(f, 0) for f in ALL_FIELDS if f not in missing}
    unknown = set(case.get("totals", {})) - set(ALL_FIELDS)
    assert not unknown, f"unknown fields {unknown}"
    facts = HouseholdFacts(_members(case, as_of), totals, missing)
    expect = case["expect"]
    if "error" in expect:
        with pytest.raises(PolicyError, match=expect["error"]):
            BOOK.apply(case["program"], case["region"], facts, as_of)
        return
    ev = BOOK.apply(case["program"], case["region"], facts, as_of).evaluation
    assert ev.decision.value == expect["decision"]
    if "benefit_fen" in expect:
        assert ev.benefit_fen == expect["benefit_fen"]
    elif ev.decision.value != "ELIGIBLE":
        assert ev.benefit_fen == 0
    outcomes = {r.id: r.outcome.value for r in ev.rules}
    for rule_id, outcome in expect.get("rules", {}).items():
        assert outcomes[rule_id] == outcome, rule_id
    for r in ev.rules:
        assert r.message_zh and r.message_en and r.references
    if expect.get("disclosed") == "outcomes":
        assert all(r.value is None and r.threshold is None and not r.figures for r in ev.rules)
        assert all(ch not in r.message_en for r in ev.rules for ch in "0123456789")
    elif expect.get("disclosed") == "figures":
        # a rule shows its figure only when two or more sources make it up (issue #11 item 4)
        assert all(r.threshold is not None for r in ev.rules if r.comparison)
        for r in ev.rules:
            if r.value is None:
                assert all(f.fields for f in r.figures)

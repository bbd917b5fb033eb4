"""Issue #11 item 4: no figure from fewer than two sources. Over a generated population, under
the "figures" disclosure of the demo and Shanghai regions, no disclosed number (a rule's value,
threshold or figure) equals any single connector's household figure; the default disclosure is
outcomes only.

Measured before (gRPC, 200 households, seed 11): dibao income_low equalled the hrss department's
household figure in 159/200, zhichu rigid_expenditure the medical department's in 190/200, and the
real-estate value the realestate department's count in 200/200."""

from __future__ import annotations

import csv
import datetime as dt
from collections import defaultdict
from pathlib import Path

import pytest

from hedui.connectors.population import generate
from hedui.core.policy import params
from hedui.core.policy.book import FIELD_KINDS, PROGRAMS, PolicyBook
from hedui.core.policy.engine import HouseholdFacts, Member
from hedui.core.policy.params import parse

AS_OF = dt.date(2026, 11, 24)


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> tuple[list, dict]:
    data = tmp_path_factory.mktemp("pop")
    generate(data, households=300, seed=11, as_of=AS_OF, standard_fen=126000)
    members: dict[str, list[tuple[str, str, dt.date]]] = defaultdict(list)
    with (data / "registry.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            members[row["household_id"]].append(
                (row["id_number"], row["relation"], dt.date.fromisoformat(row["birth_date"]))
            )
    home = {pid: hid for hid, ms in members.items() for pid, _, _ in ms}
    # connector -> household -> field -> total
    per: dict[str, dict[str, dict[str, int]]] = {}
    for path in sorted(data.glob("*.csv")):
        if path.name == "registry.csv":
            continue
        table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        with path.open(encoding="utf-8") as f:
            for row in csv.DictReader(f):
                hid = home.get(row.pop("id_number"))
                for k, v in row.items():
                    if hid is not None:
                        table[hid][k] += int(v)
        per[path.stem] = table
    return list(members.items()), per


def _single_source_figures(per: dict, hid: str) -> set[int]:
    """Every non-zero figure one connector holds of the household: each field, and their sum."""
    out: set[int] = set()
    for table in per.values():
        fields = table.get(hid, {})
        out.update(v for v in fields.values() if v)
        out.update({sum(fields.values())} - {0})
        monthly = {v // 12 for k, v in fields.items() if k.startswith("annual_")}
        out.update(monthly - {0})
    return out


def _disclosed(rules) -> set[int]:  # type: ignore[no-untyped-def]
    out: set[int] = set()
    for r in rules:
        out.update(x for x in (r.value,) if x)
        if r.threshold_fields and r.threshold:
            out.add(r.threshold)
        out.update(f.value for f in r.figures if f.value)
    return out


@pytest.mark.parametrize("region", ["demo", "shanghai"])
@pytest.mark.parametrize("program", list(PROGRAMS))
def test_no_disclosed_figure_is_one_sources_own(
    population: tuple[list, dict], program: str, region: str
) -> None:
    households, per = population
    book = PolicyBook.builtin()
    shown = 0
    for hid, ms in households:
        totals: dict[str, int] = dict.fromkeys(FIELD_KINDS, 0)  # as the service sees them
        for table in per.values():
            for k, v in table.get(hid, {}).items():
                totals[k] += v
        facts = HouseholdFacts(tuple(Member(rel, born) for _, rel, born in ms), dict(totals))
        ev = book.apply(program, region, facts, AS_OF).evaluation
        disclosed = _disclosed(ev.rules)
        shown += len(disclosed)
        own = _single_source_figures(per, hid)
        leaked = disclosed & own
        assert not leaked, (hid, program, leaked)
        # nor by subtraction of two shown numbers (zhichu: annual income / 12 - net income)
        derived = {abs(a - b) for a in disclosed for b in disclosed} | {
            abs(a // 12 - b) for a in disclosed for b in disclosed
        }
        money = {x for x in derived if x >= 1000}  # not a count that equals a small difference
        assert not money & own, (hid, program, money & own)
    if book.regions[region].disclosure(program) == "figures":
        assert shown > 0  # figures made of two or more sources are still shown


def test_the_default_disclosure_is_outcomes() -> None:
    demo = Path(params.__file__).parent / "params" / "demo.toml"
    text = demo.read_text(encoding="utf-8").replace('disclosure = "figures"', "")
    assert parse(text.encode(), "x.toml").disclosure("dibao") == "outcomes"


@pytest.mark.parametrize("land", [1, 11])
def test_land_income_that_adds_nothing_a_month_is_not_a_second_source(land: int) -> None:
    """Found by review (issue #24): annual land income of 1 to 11 fen adds 0 to the monthly
    income, yet counted as a second source it let income_low and income_high show hrss's own
    household figure (an INELIGIBLE household, whose benefit discloses nothing)."""
    hrss = 8_765_432
    totals: dict[str, int] = dict.fromkeys(FIELD_KINDS, 0)
    totals.update(monthly_wage=hrss, annual_land_income=land)
    facts = HouseholdFacts((Member("head", dt.date(1980, 1, 1), applicant=True),), totals)
    ev = PolicyBook.builtin().apply("dibao", "demo", facts, AS_OF).evaluation
    assert hrss not in _disclosed(ev.rules)
    # with land income that does add a yuan a month, the total is two sources' and is shown
    totals.update(annual_land_income=1200)
    ev = PolicyBook.builtin().apply("dibao", "demo", facts, AS_OF).evaluation
    assert hrss + 100 in _disclosed(ev.rules)

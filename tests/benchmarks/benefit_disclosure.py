"""What the dibao benefit tells the intake caller (issue #24 item 2): a count, not a test.

    .venv/bin/python -m tests.benchmarks.benefit_disclosure --households 200 --seed 11

Generates a population with the project's generator (``hedui.connectors.population.generate``,
as ``hedui population generate`` and the benchmarks do), takes every household's head as the
applicant, and computes the dibao verdict and benefit of the demo region with the independent
oracle of the end-to-end tests (``tests/e2e/oracle.py``). The product's policy engine
(``PolicyBook.apply("dibao", "demo", …)``) is run on the same households and must agree on every
decision and benefit (``--engine policy`` counts with its answers instead).

For an ELIGIBLE verdict the benefit is ``round_up_to_yuan(h*S - income_high)`` (dibao.py) with
h the household's size, S the standard per person and month (both known to the caller: the
verdict carries ``household_size``, the standard is published) and income_high the household's
counted monthly income, ``max(hrss, tax) + land`` (rules.py): hrss the 人社 department's wage +
pension + unemployment benefit, tax the 税务 department's annual taxable income // 12, land the
农业农村 department's annual land income // 12. No cap, no minimum benefit. So the caller knows

    I = h*S - benefit <= income_high <= I + 99 fen,

the household's counted income to within one yuan (not per capita: per capita it is I / h). This
script counts, for every ELIGIBLE verdict, which connector's own household figure that is:

- the attacker's count (issue #24): one department's figure within one yuan: hrss alone (no tax
  record, no land income), hrss above a lower or equal non-zero tax figure, agriculture alone;
- the count of BENCHMARKS.md (issue #11): ``h*S - benefit`` equal, in fen, to the hrss
  department's household total, which happens only when that total is a whole number of yuan;
- a check by brute force: every money figure one connector holds of the household (each field,
  each annual field / 12, the connector's total) that lies in ``[I, I + 99]``, by connector.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hedui.connectors.population import generate
from hedui.core import deployment
from hedui.core.policy.book import FIELD_KINDS, PolicyBook
from hedui.core.policy.engine import HouseholdFacts, Member
from tests.e2e import oracle

PROGRAM, REGION = "dibao", "demo"
AS_OF = dt.date(2026, 11, 24)  # the date of BENCHMARKS.md's issue #11 measurement
HRSS_FIELDS = ("monthly_wage", "monthly_pension", "monthly_unemployment_benefit")
YUAN = 100

# What the benefit gives, by the household's income sources (monthly, fen): the categories in
# the order they are printed. "one department" ones give that department's figure to a yuan.
NONE = "no income at any source (benefit = line)"
HRSS_ALONE = "hrss alone (no tax record, no land income)"
HRSS_ABOVE_TAX = "hrss above a lower tax figure (0 < tax < hrss)"
HRSS_EQUALS_TAX = "hrss equal to the tax figure (tax = hrss)"
TAX_ALONE = "tax alone (no hrss record, no land income)"
TAX_ABOVE_HRSS = "tax above a lower hrss figure (0 < hrss < tax)"
LAND_ALONE = "agriculture alone (annual land income / 12)"
SUM = "a sum: max(hrss, tax) + agriculture, both non-zero"
CATEGORIES = (
    NONE,
    HRSS_ALONE,
    HRSS_ABOVE_TAX,
    HRSS_EQUALS_TAX,
    TAX_ALONE,
    TAX_ABOVE_HRSS,
    LAND_ALONE,
    SUM,
)
ONE_DEPARTMENT = (
    HRSS_ALONE,
    HRSS_ABOVE_TAX,
    HRSS_EQUALS_TAX,
    TAX_ALONE,
    TAX_ABOVE_HRSS,
    LAND_ALONE,
)
DEPARTMENT_OF = {
    HRSS_ALONE: "hrss",
    HRSS_ABOVE_TAX: "hrss",
    HRSS_EQUALS_TAX: "hrss",
    TAX_ALONE: "tax",
    TAX_ABOVE_HRSS: "tax",
    LAND_ALONE: "agriculture",
}


@dataclass
class Household:
    hid: str
    members: list[tuple[str, str, dt.date]]  # (ID number, relation, birth date)
    connectors: dict[str, dict[str, int]] = field(default_factory=dict)  # connector -> field

    @property
    def size(self) -> int:
        return len(self.members)

    def total(self, name: str) -> int:
        return sum(fields.get(name, 0) for fields in self.connectors.values())

    def totals(self) -> dict[str, int]:
        out = dict.fromkeys(FIELD_KINDS, 0)
        for fields in self.connectors.values():
            for k, v in fields.items():
                out[k] += v
        return out


@dataclass(frozen=True)
class Verdict:
    decision: str
    benefit_fen: int


def load(data: Path) -> list[Household]:
    """Households as the generator wrote them, with each connector's household totals."""
    households: dict[str, Household] = {}
    home: dict[str, Household] = {}
    with (data / "registry.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            hh = households.setdefault(row["household_id"], Household(row["household_id"], []))
            pid = row["id_number"].upper()
            hh.members.append((pid, row["relation"], dt.date.fromisoformat(row["birth_date"])))
            home[pid] = hh
    for path in sorted(data.glob("*.csv")):
        if path.name == "registry.csv":
            continue
        with path.open(encoding="utf-8") as f:
            for row in csv.DictReader(f):
                owner = home.get(row.pop("id_number").upper())
                if owner is None:
                    continue
                fields = owner.connectors.setdefault(path.stem, defaultdict(int))
                for k, v in row.items():
                    fields[k] += int(v)
    return list(households.values())


def oracle_verdicts(data: Path, households: list[Household], as_of: dt.date) -> list[Verdict]:
    members, person = oracle.load(data)
    out = []
    for hh in households:
        e = oracle.expected(members[hh.hid], person, as_of.isoformat())
        out.append(Verdict(e["decision"], e["benefit_fen"]))
    return out


def policy_verdicts(households: list[Household], as_of: dt.date) -> list[Verdict]:
    book = PolicyBook.builtin()
    out = []
    for hh in households:
        facts = HouseholdFacts(tuple(Member(rel, born) for _, rel, born in hh.members), hh.totals())
        ev = book.apply(PROGRAM, REGION, facts, as_of).evaluation
        out.append(Verdict(ev.decision.value, ev.benefit_fen))
    return out


def category(hrss: int, tax: int, land: int) -> str:
    """What ``income_high = max(hrss, tax) + land`` is made of (monthly fen)."""
    if land:
        return LAND_ALONE if not hrss and not tax else SUM
    if not hrss and not tax:
        return NONE
    if not tax:
        return HRSS_ALONE
    if not hrss:
        return TAX_ALONE
    if tax < hrss:
        return HRSS_ABOVE_TAX
    return HRSS_EQUALS_TAX if tax == hrss else TAX_ABOVE_HRSS


def money_figures(hh: Household) -> Iterable[tuple[str, str, int]]:
    """Every non-zero money figure one connector holds of the household: (connector, what,
    fen): each field, each annual field / 12, and the connector's money total."""
    for connector, fields in sorted(hh.connectors.items()):
        kind = deployment.kind_of(connector)
        fen = {f.name for f in kind.fields if f.unit == "fen"}
        money = {k: v for k, v in fields.items() if k in fen and v}
        for k, v in money.items():
            yield connector, k, v
            if k.startswith("annual_"):
                yield connector, f"{k} / 12", v // 12
        if len(money) > 1:
            yield connector, "+".join(sorted(money)), sum(money.values())


@dataclass
class Count:
    households: int = 0
    eligible: int = 0
    categories: Counter[str] = field(default_factory=Counter)
    exact_hrss: int = 0  # line - benefit == hrss total (fen), hrss > 0: BENCHMARKS.md's count
    exact_any: int = 0  # line - benefit == some non-zero money figure of one connector
    within_yuan_any: int = 0  # some non-zero money figure of one connector in [I, I + 99]
    within_yuan_by: Counter[str] = field(default_factory=Counter)  # connector -> households
    elsewhere: list[str] = field(default_factory=list)  # near figures outside the categories
    per_capita_hrss: int = 0  # |I/h - hrss/h| < 1 yuan, hrss > 0
    whole_yuan_hrss: Counter[str] = field(default_factory=Counter)  # category -> hrss % 100 == 0
    engine_disagreements: int = 0
    rows: list[dict[str, object]] = field(default_factory=list)


def count(
    households: list[Household],
    verdicts: list[Verdict],
    standard: int,
    *,
    detail: bool = False,
) -> Count:
    c = Count(households=len(households))
    for hh, v in zip(households, verdicts, strict=True):
        if v.decision != "ELIGIBLE":
            continue
        c.eligible += 1
        line = hh.size * standard
        low = line - v.benefit_fen  # what the caller computes
        high = low + YUAN - 1
        hrss = sum(hh.total(f) for f in HRSS_FIELDS)
        tax = hh.total("annual_taxable_income") // 12
        land = hh.total("annual_land_income") // 12
        counted = max(hrss, tax) + land  # income_high of rules.py
        assert low <= counted <= high, (hh.hid, low, counted)  # the rounding as dibao.py has it
        cat = category(hrss, tax, land)
        c.categories[cat] += 1
        if hrss and low == hrss:
            c.exact_hrss += 1
        if hrss and abs(low - hrss) < YUAN * hh.size:
            c.per_capita_hrss += 1
        if cat in ONE_DEPARTMENT and DEPARTMENT_OF[cat] == "hrss" and hrss % YUAN == 0:
            c.whole_yuan_hrss[cat] += 1
        figures = list(money_figures(hh))
        if any(value == low for _, _, value in figures):
            c.exact_any += 1
        # I = 0 (no income anywhere) is its own category: any figure under one yuan (a crumb
        # of a deposit) would lie in [0, 99] by chance
        near = {conn for conn, _, value in figures if low <= value <= high} if low else set()
        if near:
            c.within_yuan_any += 1
            c.within_yuan_by[" + ".join(sorted(near))] += 1
            if cat not in ONE_DEPARTMENT or DEPARTMENT_OF[cat] not in near:
                c.elsewhere.append(
                    f"{hh.hid} ({cat}; I = {low} fen: "
                    + ", ".join(f"{n}:{w}={v}" for n, w, v in figures if low <= v <= high)
                    + ")"
                )
        if detail:
            c.rows.append(
                {
                    "household": hh.hid,
                    "size": hh.size,
                    "benefit_fen": v.benefit_fen,
                    "line_minus_benefit_fen": low,
                    "hrss_fen": hrss,
                    "tax_monthly_fen": tax,
                    "land_monthly_fen": land,
                    "gives": cat,
                    "figures_within_one_yuan": [
                        f"{conn}:{what}" for conn, what, value in figures if low <= value <= high
                    ],
                }
            )
    return c


def run(
    households: int, seed: int, as_of: dt.date, engine: str, data: Path, *, detail: bool = False
) -> Count:
    standard = oracle.standard_on(as_of.isoformat())
    generate(data, households=households, seed=seed, as_of=as_of, standard_fen=standard)
    population = load(data)
    by_oracle = oracle_verdicts(data, population, as_of)
    by_policy = policy_verdicts(population, as_of)
    chosen = by_oracle if engine == "oracle" else by_policy
    result = count(population, chosen, standard, detail=detail)
    result.engine_disagreements = sum(a != b for a, b in zip(by_oracle, by_policy, strict=True))
    return result


def summary(c: Count) -> dict[str, object]:
    cats = c.categories
    one = sum(cats[k] for k in ONE_DEPARTMENT)
    return {
        "households": c.households,
        "eligible": c.eligible,
        "gives": {k: cats[k] for k in CATEGORIES},
        "one_department_within_one_yuan": one,
        "attacker": {
            "total": cats[HRSS_ALONE]
            + cats[HRSS_ABOVE_TAX]
            + cats[HRSS_EQUALS_TAX]
            + cats[LAND_ALONE],
            "hrss_alone": cats[HRSS_ALONE],
            "hrss_above_lower_or_equal_tax": cats[HRSS_ABOVE_TAX] + cats[HRSS_EQUALS_TAX],
            "agriculture": cats[LAND_ALONE],
        },
        "benchmarks_exact_hrss": c.exact_hrss,
        "hrss_whole_yuan": dict(c.whole_yuan_hrss),
        "per_capita_hrss_within_one_yuan": c.per_capita_hrss,
        "exact_any_money_figure": c.exact_any,
        "within_one_yuan_any_money_figure": c.within_yuan_any,
        "within_one_yuan_by_connector": dict(c.within_yuan_by),
        "within_one_yuan_outside_the_categories": c.elsewhere,
        "engine_disagreements": c.engine_disagreements,
    }


def report(c: Count, args: argparse.Namespace, standard: int) -> str:
    cats, e = c.categories, c.eligible
    lines = [
        f"population: {args.households} households, seed {args.seed}, as of {args.as_of}, "
        f"standard {standard // YUAN} yuan/person/month; every head verified for dibao ({REGION})",
        f"verdicts by: {args.engine} (the other one disagrees on {c.engine_disagreements} "
        f"of {c.households} decisions or benefits)",
        f"ELIGIBLE: {e} of {c.households}",
        "",
        "what I = line - benefit (income_high rounded down to the yuan) is:",
    ]
    lines += [f"  {cats[k]:5d}  {k}" for k in CATEGORIES]
    one = sum(cats[k] for k in ONE_DEPARTMENT)
    hrss_above = cats[HRSS_ABOVE_TAX] + cats[HRSS_EQUALS_TAX]
    attacker = cats[HRSS_ALONE] + hrss_above + cats[LAND_ALONE]
    lines += [
        f"  {one:5d}  = one department's figure to within one yuan",
        "",
        f"attacker's count (issue #24): {attacker} of {e}: hrss alone {cats[HRSS_ALONE]}, "
        f"hrss above a lower tax figure {hrss_above} (0 < tax <= hrss), agriculture "
        f"{cats[LAND_ALONE]}",
        f"BENCHMARKS.md's count (line - benefit == hrss total, in fen): {c.exact_hrss} of {e} "
        f"(hrss-dominated verdicts whose hrss total is whole yuan: "
        f"{sum(c.whole_yuan_hrss.values())})",
        f"per capita (|I/h - hrss/h| < 1 yuan, hrss > 0): {c.per_capita_hrss}",
        f"any non-zero money figure of one connector: equal to I in fen {c.exact_any}, "
        f"in [I, I + 0.99 yuan] with I > 0 {c.within_yuan_any}; by connector: "
        f"{json.dumps(dict(sorted(c.within_yuan_by.items())))}",
    ]
    lines += [f"  not one department's counted income: {x}" for x in c.elsewhere]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.benefit_disclosure", description=__doc__.split("\n")[0]
    )
    p.add_argument("--households", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument(
        "--as-of", type=dt.date.fromisoformat, default=AS_OF, help="default: %(default)s"
    )
    p.add_argument("--engine", choices=("oracle", "policy"), default="oracle")
    p.add_argument("--data", type=Path, help="keep the population in this folder")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.add_argument("--detail", action="store_true", help="with --json: one row per ELIGIBLE")
    args = p.parse_args(argv)
    standard = oracle.standard_on(args.as_of.isoformat())
    with tempfile.TemporaryDirectory(prefix="hedui-benefit-") as tmp:
        data = args.data or Path(tmp)
        c = run(args.households, args.seed, args.as_of, args.engine, data, detail=args.detail)
    if args.json:
        out = summary(c)
        if args.detail:
            out["rows"] = c.rows
        print(json.dumps(out, ensure_ascii=False, indent=1))
    else:
        print(report(c, args, standard))
    return 1 if c.engine_disagreements else 0


if __name__ == "__main__":
    sys.exit(main())

"""The synthetic population: format, validity, determinism and the threshold households."""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from hedui.connectors import population
from hedui.core import deployment
from hedui.core.resident_id import parse

AS_OF = dt.date(2025, 6, 30)
S = 130_000  # 1,300 yuan per person per month
CONNECTORS = (*deployment.DEPARTMENT_KINDS, *deployment.bank_ids())


def read(path: Path) -> list[list[str]]:
    raw = path.read_bytes()
    assert b"\r" not in raw
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


class Population:
    def __init__(self, out: Path, summary: population.PopulationSummary) -> None:
        self.out, self.summary = out, summary
        self.registry = read(out / "registry.csv")
        self.household_of = {row[1]: row[0] for row in self.registry[1:]}
        self.members: dict[str, list[list[str]]] = defaultdict(list)
        for row in self.registry[1:]:
            self.members[row[0]].append(row)
        self.totals: dict[str, Counter[str]] = defaultdict(Counter)
        self.rows: dict[str, list[list[str]]] = {}
        for path in sorted(out.glob("*.csv")):
            if path.name == "registry.csv":
                continue
            table = read(path)
            self.rows[path.stem] = table[1:]
            for row in table[1:]:
                for name, value in zip(table[0][1:], row[1:], strict=True):
                    self.totals[self.household_of[row[0]]][name] += int(value)

    def rules(self, hid: str) -> dict[str, bool | None]:
        t, line = self.totals[hid], len(self.members[hid]) * S
        low, high = income(t)
        return {
            "income": True if high < line else False if low >= line else None,
            "assets": assets(t) <= 24 * line,
            "property": t["residential_properties"] <= 1 and t["commercial_properties"] == 0,
            "vehicles": t["vehicles"] == 0,
            "enterprises": t["enterprises"] == 0,
        }


def income(t: Counter[str]) -> tuple[int, int]:
    hrss = t["monthly_wage"] + t["monthly_pension"] + t["monthly_unemployment_benefit"]
    tax, land = t["annual_taxable_income"] // 12, t["annual_land_income"] // 12
    return hrss + land, max(hrss, tax) + land


def assets(t: Counter[str]) -> int:
    keys = ("deposits", "wealth_products", "securities_value", "insurance_cash_value")
    return sum(t[k] for k in keys)


def make_population(
    out: Path, households: int = 400, seed: int = 7, banks: tuple[str, ...] | None = None
) -> Population:
    chosen = deployment.bank_ids() if banks is None else banks
    summary = population.generate(
        out, households=households, seed=seed, as_of=AS_OF, standard_fen=S, banks=chosen
    )
    return Population(out, summary)


@pytest.fixture(scope="module")
def pop(tmp_path_factory: pytest.TempPathFactory) -> Population:
    return make_population(tmp_path_factory.mktemp("population"))


def test_summary_matches_files(pop: Population) -> None:
    s = pop.summary
    assert s.households == 400 == len(pop.members) == len(s.applicants)
    assert s.people == len(pop.registry) - 1
    assert {p.name for p in s.files} == {"registry.csv", *(f"{c}.csv" for c in CONNECTORS)}
    assert all(p.parent == pop.out and p.exists() for p in s.files)
    for hid, head in s.applicants:
        assert pop.members[hid][0][1:3] == [head, "head"]


def test_registry_ids_valid_unique_one_head_first(pop: Population) -> None:
    assert pop.registry[0] == ["household_id", "id_number", "relation", "birth_date", "district"]
    # a household lives in one district, a county-level code of GB/T 2260
    districts: dict[str, set[str]] = {}
    for row in pop.registry[1:]:
        districts.setdefault(row[0], set()).add(row[4])
    assert all(len(d) == 1 and next(iter(d)).isdigit() for d in districts.values())
    ids = [row[1] for row in pop.registry[1:]]
    assert len(ids) == len(set(ids))
    for hid, members in pop.members.items():
        assert [m[2] for m in members].count("head") == 1 and members[0][2] == "head", hid
        for _, number, relation, birth, _district in members:
            rid = parse(number, today=AS_OF)
            assert rid.value == number
            assert rid.birth_date == dt.date.fromisoformat(birth)
            assert relation in population.RELATIONS
            assert rid.region in population.REGIONS + population.NATIONWIDE
    sizes = Counter(len(m) for m in pop.members.values())
    assert set(sizes) == {1, 2, 3, 4, 5, 6}
    assert sizes[2] > sizes[5] > 0


def test_ages_consistent_with_relations(pop: Population) -> None:
    years = dt.timedelta(days=365)
    for members in pop.members.values():
        ids = [parse(m[1], today=AS_OF) for m in members]
        head = ids[0]
        by_relation: dict[str, list[dt.date]] = defaultdict(list)
        for m, rid in zip(members, ids, strict=True):
            by_relation[m[2]].append(rid.birth_date)
            if m[2] == "spouse":
                assert rid.is_male != head.is_male
                assert AS_OF - rid.birth_date >= 20 * years
        assert AS_OF - head.birth_date >= 18 * years
        for child in by_relation["child"]:
            assert child - head.birth_date > 18 * years
            assert all(child - s > 18 * years for s in by_relation["spouse"])
        for parent in by_relation["parent"]:
            assert head.birth_date - parent > 18 * years
        for grandchild in by_relation["grandchild"]:
            assert all(grandchild - c > 18 * years for c in by_relation["child"])


def test_headers_match_declared_fields(pop: Population) -> None:
    for connector in CONNECTORS:
        header = read(pop.out / f"{connector}.csv")[0]
        assert header == ["id_number", *deployment.kind_of(connector).field_names], connector


def test_values_are_nonnegative_integers_of_registered_people(pop: Population) -> None:
    integer = re.compile(r"(0|[1-9][0-9]*)")
    for connector, rows in pop.rows.items():
        width = 1 + len(deployment.kind_of(connector).fields)
        for row in rows:
            assert len(row) == width
            assert row[0] in pop.household_of
            assert all(integer.fullmatch(v) for v in row[1:]), (connector, row)
            assert any(int(v) for v in row[1:]), (connector, row)  # only holders get rows


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    def files(out: Path, seed: int) -> dict[str, bytes]:
        make_population(out, households=60, seed=seed)
        return {p.name: p.read_bytes() for p in out.glob("*.csv")}

    first = files(tmp_path / "a", 3)
    assert first == files(tmp_path / "b", 3)
    assert first != files(tmp_path / "c", 4)


def test_money_spread_over_people_banks_and_rows(pop: Population) -> None:
    banks_of: dict[str, set[str]] = defaultdict(set)
    repeated: Counter[str] = Counter()
    for connector, rows in pop.rows.items():
        ids = Counter(row[0] for row in rows)
        repeated[connector.split("-")[0]] += sum(1 for n in ids.values() if n > 1)
        if connector.startswith("bank-"):
            for pid in ids:
                banks_of[pid].add(connector)
    assert repeated["bank"] > 0 and repeated["hrss"] > 0  # two accounts, two employers
    assert max(len(b) for b in banks_of.values()) >= 3
    big = sum(len(pop.rows[b]) for b in deployment.bank_ids(6)) / 6
    small = sum(len(pop.rows[b]) for b in deployment.bank_ids()[6:]) / 67
    assert big > 4 * small > 0
    for connector in deployment.DEPARTMENT_KINDS:
        assert pop.rows[connector], connector


def test_realistic_mix_of_outcomes(pop: Population) -> None:
    verdicts = [pop.rules(hid) for hid in pop.members]
    eligible = sum(all(v.values()) for v in verdicts)
    failing = sum(False in v.values() for v in verdicts)
    assert eligible > 0.3 * len(verdicts)
    assert failing > 0.15 * len(verdicts)
    assert sum(v["vehicles"] is False for v in verdicts) > 10
    assert sum(v["property"] is False for v in verdicts) > 10


EXPECTED: dict[str, dict[str, bool | None]] = {
    "income_below_line": {"income": True},
    "income_at_line": {"income": False},
    "income_sources_disagree": {"income": None},
    "assets_at_limit": {"assets": True},
    "assets_over_limit": {"assets": False},
    "one_home": {"property": True},
    "two_homes": {"property": False},
    "one_vehicle": {"vehicles": False},
    "one_enterprise": {"enterprises": False},
    "clearly_eligible": {},
}


@pytest.mark.parametrize("banks", [None, ("bank-01", "bank-40"), ()], ids=["73", "2", "0"])
def test_threshold_households_sit_at_the_thresholds(
    tmp_path: Path, banks: tuple[str, ...] | None
) -> None:
    pop = make_population(tmp_path, households=40, seed=11, banks=banks)
    found = dict(pop.summary.thresholds)
    assert list(found) == list(population.THRESHOLD_CASES)
    assert len(set(found.values())) == len(found)
    for label, hid in found.items():
        t, line = pop.totals[hid], len(pop.members[hid]) * S
        assert len(pop.members[hid]) >= 2
        rules = pop.rules(hid)
        if label == "clearly_ineligible":
            assert not any(rules.values())
            continue
        assert rules == {**dict.fromkeys(rules, True), **EXPECTED[label]}, label
        low, high = income(t)
        if label == "income_below_line":
            assert low == high == line - 1
        elif label == "income_at_line":
            assert low == line
        elif label == "income_sources_disagree":
            assert (low, high) == (line - 1, line)
        elif label.startswith("assets_"):
            assert assets(t) == 24 * line + (label == "assets_over_limit")
        elif label in ("one_home", "two_homes"):
            assert t["residential_properties"] == (1 if label == "one_home" else 2)
        elif label in ("one_vehicle", "one_enterprise"):
            assert t["vehicles"] + t["enterprises"] == 1
        elif label == "clearly_eligible":
            assert high == 0 and assets(t) <= line


def test_threshold_assets_spread_over_banks(tmp_path: Path) -> None:
    pop = make_population(tmp_path, households=30, seed=5)
    for label, hid in pop.summary.thresholds:
        if not label.startswith("assets_"):
            continue
        ids = {m[1] for m in pop.members[hid]}
        banks = {
            c
            for c, rows in pop.rows.items()
            if c.startswith("bank-") and any(r[0] in ids for r in rows)
        }
        assert len(banks) >= 2, label


def test_small_population_has_no_threshold_households(tmp_path: Path) -> None:
    pop = make_population(tmp_path, households=5)
    assert pop.summary.thresholds == ()
    assert pop.summary.households == 5
    empty = population.generate(
        tmp_path / "empty", households=0, seed=1, as_of=AS_OF, standard_fen=S
    )
    assert empty.people == 0 and len(empty.files) == 1 + len(CONNECTORS)


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        population.generate(tmp_path, households=-1, seed=1, as_of=AS_OF, standard_fen=S)
    with pytest.raises(ValueError):
        population.generate(tmp_path, households=1, seed=1, as_of=AS_OF, standard_fen=0)
    with pytest.raises((ValueError, KeyError)):
        population.generate(
            tmp_path, households=1, seed=1, as_of=AS_OF, standard_fen=S, banks=("tax",)
        )


def test_thousand_households(tmp_path: Path) -> None:
    summary = population.generate(tmp_path, households=1000, seed=2, as_of=AS_OF, standard_fen=S)
    assert summary.households == 1000 and summary.people > 2000


def test_a_population_from_every_province_imports(tmp_path: Path) -> None:
    """People born in every province-level division (Chongqing's 50 was refused before) are
    generated, and every file of such a population validates for import."""
    from hedui.connectors.importer import validate_dataset
    from hedui.core.keystore import REGISTRY_ID
    from hedui.core.resident_id import PROVINCE_CODES

    today = dt.date(2026, 11, 23)
    summary = population.generate(
        tmp_path, households=1500, seed=3, as_of=today, standard_fen=126000
    )
    with (tmp_path / "registry.csv").open(encoding="utf-8") as f:
        provinces = {row["id_number"][:2] for row in csv.DictReader(f)}
    assert provinces == PROVINCE_CODES
    assert validate_dataset(tmp_path / "registry.csv", REGISTRY_ID, today=today) == summary.people
    for path in summary.files:
        if path.stem != REGISTRY_ID:
            validate_dataset(path, path.stem, today=today)

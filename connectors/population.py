"""A synthetic population for the demo and the benchmarks (DESIGN §10).

``generate`` writes the household registry and one CSV per connector of a deployment, in the
import format of DESIGN §10. Everything is drawn from ``random.Random(seed)``, so a seed always
gives the same files. Money is integer fen throughout; no float reaches a file.

Besides households drawn at random (mostly low-income applicants, some pensioners, some clearly
well off), a population of 20 households or more holds one household for each case of
``THRESHOLD_CASES``: it sits exactly at one 低保 threshold and clearly passes every other rule.
``PopulationSummary.thresholds`` names them as (label, household_id) pairs.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from hedui.core import deployment
from hedui.core.resident_id import make

# County-level divisions of Zhejiang (GB/T 2260), used as the region of birth in ID numbers.
REGIONS: tuple[str, ...] = (
    "330102", "330105", "330106", "330108", "330109", "330110", "330111", "330112",
    "330122", "330127", "330182", "330203", "330205", "330206", "330211", "330212",
    "330281", "330282", "330302", "330303", "330304", "330381", "330382", "330402",
    "330411", "330481", "330502", "330503", "330602", "330603", "330604", "330681",
    "330702", "330703", "330782", "330802", "330803", "330902", "330903", "331002",
    "331003", "331004", "331102",
)  # fmt: skip

# One county-level division of every province-level code of GB/T 2260 (a few people of every
# household were born elsewhere): 北京朝阳 … 重庆沙坪坝 … 新疆天山, and the codes of the residence
# permits of Hong Kong (81), Macao (82) and Taiwan (83) residents and of Taiwan (71).
NATIONWIDE: tuple[str, ...] = (
    "110105", "120101", "130102", "140105", "150102", "210102", "220102", "230102",
    "310104", "320102", "330106", "340102", "350102", "360102", "370102", "410102",
    "420102", "430102", "440103", "450102", "460105", "500106", "510104", "520102",
    "530102", "540102", "610102", "620102", "630102", "640104", "650102", "710000",
    "810000", "820000", "830000",
)  # fmt: skip

RELATIONS: tuple[str, ...] = ("head", "spouse", "child", "parent", "grandchild", "sibling", "other")

THRESHOLD_CASES: Mapping[str, str] = MappingProxyType({
    "income_below_line": "income (both sources) == h*S - 1: the income rule passes",
    "income_at_line": "income_low == h*S: the income rule fails",
    "income_sources_disagree": "income_low == h*S - 1, tax makes income_high == h*S: undecided",
    "assets_at_limit": "financial assets == 24*h*S: passes",
    "assets_over_limit": "financial assets == 24*h*S + 1: fails",
    "one_home": "exactly one residential property: passes",
    "two_homes": "two residential properties, one per spouse: fails",
    "one_vehicle": "one vehicle: fails",
    "one_enterprise": "one enterprise: fails",
    "clearly_eligible": "no income, small deposits, no property: passes every rule",
    "clearly_ineligible": "high wages, three homes, a car, an enterprise: fails every rule",
})  # fmt: skip

# Relations after the head, by household size ("other" is the child's spouse).
_TEMPLATES: Mapping[int, tuple[tuple[str, ...], ...]] = {
    size: tuple(tuple(t.split()) for t in templates)
    for size, templates in {
        1: ("",),
        2: ("spouse", "child", "parent", "sibling"),
        3: ("spouse child", "child child", "spouse parent", "parent parent"),
        4: ("spouse child child", "spouse child parent", "spouse parent parent"),
        5: ("spouse child child parent", "spouse child parent parent",
            "spouse child other grandchild"),
        6: ("spouse child child parent parent", "spouse child other grandchild grandchild"),
    }.items()
}  # fmt: skip
_SIZE_WEIGHTS = (22, 28, 24, 14, 8, 4)  # household sizes 1..6
_BIG_BANKS = deployment.bank_ids(6)  # the big state-owned banks hold most accounts
_BANKS_PER_PERSON = (15, 35, 30, 15, 5)  # weights of holding 0..4 banks
_YUAN = 100
_REGISTRY_HEADER = ("household_id", "id_number", "relation", "birth_date", "district")


@dataclass(frozen=True)
class PopulationSummary:
    households: int
    people: int
    files: tuple[Path, ...]
    applicants: tuple[tuple[str, str], ...]  # (household_id, ID number of the head)
    thresholds: tuple[tuple[str, str], ...]  # (label from THRESHOLD_CASES, household_id)
    members: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # household -> IDs


@dataclass(frozen=True)
class _Member:
    id_number: str
    relation: str
    birth: dt.date
    age: int
    student: bool


def generate(
    out_dir: Path,
    *,
    households: int,
    seed: int,
    as_of: dt.date,
    standard_fen: int,
    banks: tuple[str, ...] = deployment.bank_ids(),
) -> PopulationSummary:
    """Write ``registry.csv`` and a ``<connector>.csv`` per department and bank in ``out_dir``."""
    if households < 0 or standard_fen <= 0:
        raise ValueError("households must be >= 0 and standard_fen > 0")
    for bank in banks:
        if not deployment.kind_of(bank).is_bank:
            raise ValueError(f"{bank!r} is not a bank connector")
    return _Generator(seed, as_of, standard_fen, banks).run(out_dir, households)


class _Generator:
    def __init__(self, seed: int, as_of: dt.date, standard_fen: int, banks: Sequence[str]) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - synthetic data, not security
        self.as_of = as_of
        self.s = standard_fen
        self.banks = tuple(banks)
        self.bank_weights = tuple(12 if b in _BIG_BANKS else 1 for b in self.banks)
        self.used_ids: set[str] = set()
        self.accounts: dict[str, list[str]] = {}
        self.rows: dict[str, list[tuple[str, tuple[int, ...]]]] = defaultdict(list)

    def run(self, out_dir: Path, households: int) -> PopulationSummary:
        rng = self.rng
        labels = list(THRESHOLD_CASES) if households >= 20 else []
        special = dict(zip(rng.sample(range(households), len(labels)), labels, strict=True))
        registry: list[tuple[str, str, str, str, str]] = []
        applicants: list[tuple[str, str]] = []
        thresholds: list[tuple[str, str]] = []
        for index in range(households):
            hid = f"HH{index + 1:06d}"
            label = special.get(index)
            members, home = self._members(label is not None)
            registry += [(hid, m.id_number, m.relation, m.birth.isoformat(), home) for m in members]
            applicants.append((hid, members[0].id_number))
            if label is None:
                self._random_economy(members)
            else:
                thresholds.append((label, hid))
                self._threshold_economy(label, members)
        out_dir.mkdir(parents=True, exist_ok=True)
        files = [_write(out_dir / "registry.csv", _REGISTRY_HEADER, registry)]
        for connector in (*deployment.DEPARTMENT_KINDS, *self.banks):
            header = ("id_number", *deployment.kind_of(connector).field_names)
            rows = [(pid, *values) for pid, values in self.rows.get(connector, [])]
            files.append(_write(out_dir / f"{connector}.csv", header, rows))
        thresholds.sort(key=lambda pair: labels.index(pair[0]))
        by_household: dict[str, tuple[str, ...]] = defaultdict(tuple)
        for hid, id_number, *_ in registry:
            by_household[hid] += (id_number,)
        return PopulationSummary(
            households,
            len(registry),
            tuple(files),
            tuple(applicants),
            tuple(thresholds),
            dict(by_household),
        )

    def _members(self, with_spouse: bool) -> tuple[list[_Member], str]:
        """The members of a new household, and its district (most were born there too)."""
        rng = self.rng
        if with_spouse:  # threshold households: 2-5 people, so money spreads over members
            template = rng.choice([t for t in _TEMPLATES[rng.randint(2, 5)] if "spouse" in t])
        else:
            template = rng.choice(_TEMPLATES[rng.choices(range(1, 7), _SIZE_WEIGHTS)[0]])
        home = rng.choice(REGIONS)
        members = []
        for relation, age, male in self._ages(template):
            region = home if rng.random() < 0.85 else rng.choice(REGIONS + NATIONWIDE)
            birth = self.as_of - dt.timedelta(days=age * 365 + age // 4 + rng.randrange(365))
            while True:
                number = make(region, birth, rng.randrange(500) * 2 + male).value
                if number not in self.used_ids:
                    break
            self.used_ids.add(number)
            student = 6 <= age <= 17 or (
                age <= 22 and relation in ("child", "grandchild", "sibling") and rng.random() < 0.5
            )
            if age >= 16:
                banks = rng.choices(range(len(_BANKS_PER_PERSON)), _BANKS_PER_PERSON)[0]
            else:
                banks = int(rng.random() < 0.4)
            self.accounts[number] = self._pick_banks(banks, ())
            members.append(_Member(number, relation, birth, age, student))
        return members, home

    def _ages(self, template: tuple[str, ...]) -> list[tuple[str, int, bool]]:
        rng = self.rng
        if "grandchild" in template:
            lo, hi = 50, 75
        elif "parent" in template:
            lo, hi = 22, 58
        elif "child" in template:
            lo, hi = 24, 70
        elif template or rng.random() < 0.5:
            lo, hi = 22, 88
        else:  # many applicants living alone are old
            lo, hi = 60, 92
        head_age, head_male = rng.randint(lo, hi), rng.random() < 0.5
        out = [("head", head_age, head_male)]
        spouse_age = head_age
        if "spouse" in template:
            spouse_age = max(20, min(98, head_age + rng.randint(-6, 6)))
            out.append(("spouse", spouse_age, not head_male))
        child_age, child_male, other_age = 0, True, 0
        two_parents = template.count("parent") == 2
        for relation in template:
            male = rng.random() < 0.5
            if relation == "child":
                lo = 22 if "grandchild" in template else 0
                age = child_age = rng.randint(lo, min(head_age, spouse_age) - 20)
                child_male = male
            elif relation == "other":  # the child's spouse
                age = other_age = max(20, child_age + rng.randint(-3, 3))
                male = not child_male
            elif relation == "grandchild":
                age = rng.randint(0, max(0, min(child_age, other_age) - 20))
            elif relation == "parent":
                age = rng.randint(head_age + 20, min(head_age + 38, 98))
                male = not any(r == "parent" for r, _, _ in out) if two_parents else male
            elif relation == "sibling":
                age = max(16, head_age + rng.randint(-8, 8))
            else:
                continue
            out.append((relation, age, male))
        return out

    def _pick_banks(self, count: int, exclude: Sequence[str]) -> list[str]:
        weights = zip(self.banks, self.bank_weights, strict=True)
        pool = [(b, w) for b, w in weights if b not in exclude]
        chosen: list[str] = []
        for _ in range(min(count, len(pool))):
            i = self.rng.choices(range(len(pool)), [w for _, w in pool])[0]
            chosen.append(pool.pop(i)[0])
        return chosen

    def _emit(self, connector: str, id_number: str, **values: int) -> None:
        names = deployment.kind_of(connector).field_names
        assert set(values) <= set(names), (connector, values)
        if any(values.values()):
            self.rows[connector].append((id_number, tuple(values.get(n, 0) for n in names)))

    def _split(self, total: int, parts: int) -> list[int]:
        """``total`` in ``parts`` non-negative shares of comparable size (no crumbs)."""
        weights = [self.rng.randint(1, 4) for _ in range(parts)]
        shares = [total * w // sum(weights) for w in weights]
        shares[self.rng.randrange(parts)] += total - sum(shares)
        return shares

    def _random_economy(self, ms: list[_Member]) -> None:
        rng, line = self.rng, len(ms) * self.s
        shops = cars = firms = sec = wealth = ins = 0
        roll = rng.random()
        if roll < 0.60:  # low income: the bulk of applicants
            pct = 0 if rng.random() < 0.3 else rng.randint(5, 75)
            assets = rng.randint(0, line * 8 if rng.random() < 0.7 else min(line, 200_000))
            homes, formal = int(rng.random() < 0.55), 30
            ins = rng.randint(0, 30) if rng.random() < 0.1 else 0
        elif roll < 0.78:  # around the line
            pct, assets = rng.randint(75, 130), rng.randint(line * 4, line * 30)
            homes, cars, formal = int(rng.random() < 0.65), int(rng.random() < 0.1), 50
            ins = rng.randint(0, 30) if rng.random() < 0.2 else 0
        else:  # clearly well off
            pct, assets = rng.randint(150, 600), rng.randint(line * 15, line * 150)
            homes, shops = rng.choice((1, 1, 2, 2, 3)), int(rng.random() < 0.15)
            cars, firms, formal = rng.choice((0, 1, 1, 2)), int(rng.random() < 0.15), 80
            sec = rng.randint(5, 40) if rng.random() < 0.4 else 0
            wealth = rng.randint(5, 40) if rng.random() < 0.5 else 0
            ins = rng.randint(0, 20) if rng.random() < 0.3 else 0
        income = line * pct // 100
        land = min(income, rng.randint(2_000, 40_000)) if rng.random() < 0.25 else 0
        self._income(ms, income - land, land, None, formal)
        if firms:  # business profit, declared to tax but unknown to hrss
            self._emit("tax", ms[0].id_number, annual_taxable_income=rng.randint(5, 80) * line)
        self._assets(ms, assets, sec, wealth, ins, 1)
        self._property(ms, homes, shops, cars, firms)
        self._misc(ms, poor=pct < 130)

    def _threshold_economy(self, label: str, ms: list[_Member]) -> None:
        rng, line = self.rng, len(ms) * self.s
        hrss, land, tax = line * rng.randint(0, 40) // 100, 0, None
        assets, homes, cars, firms = rng.randint(0, line * 4), rng.randint(0, 1), 0, 0
        mix = (0, 0, 0)
        if label.startswith("income_"):
            income = line if label == "income_at_line" else line - 1
            land = rng.randint(0, income // 5)
            hrss = income - land
            if label == "income_sources_disagree":
                tax = 12 * (hrss + 1) + rng.randrange(12)
        elif label.startswith("assets_"):
            assets = 24 * line + (label == "assets_over_limit")
            mix = (rng.randint(5, 25), rng.randint(5, 25), rng.randint(0, 10))
        elif label in ("one_home", "two_homes"):
            homes = 1 if label == "one_home" else 2
        elif label == "one_vehicle":
            cars = 1
        elif label == "one_enterprise":
            firms = 1
        elif label == "clearly_eligible":
            hrss, assets, homes = 0, rng.randint(0, line), 0
        elif label == "clearly_ineligible":
            hrss, assets, homes, cars, firms = 4 * line, 60 * line, 3, 1, 1
        self._income(ms, hrss, land, tax, 60)
        self._assets(ms, assets, *mix, rng.randint(2, 3))
        self._property(ms, homes, 0, cars, firms, split=label == "two_homes")
        self._misc(ms, poor=True)

    def _income(
        self, ms: list[_Member], hrss: int, land: int, tax: int | None, formal: int
    ) -> None:
        """Place monthly hrss income, monthly land income and (if given) annual taxable income."""
        rng = self.rng
        earners = [m for m in ms if m.age >= 18 and not m.student]
        paid = [m for m in earners if rng.random() < 0.7] or earners[:1]  # some have nothing
        for m, amount in zip(paid, self._split(hrss, len(paid)), strict=True):
            if m.age >= 60:
                self._emit("hrss", m.id_number, monthly_pension=amount)
            elif rng.random() < 0.25:
                self._emit("hrss", m.id_number, monthly_unemployment_benefit=amount)
            elif amount:
                two_employers = rng.random() < 0.15
                for part in self._split(amount, 2) if two_employers else [amount]:
                    self._emit("hrss", m.id_number, monthly_wage=part)
                if tax is None and rng.randrange(100) < formal:
                    self._emit("tax", m.id_number, annual_taxable_income=12 * amount)
                    fund = amount * rng.randint(6, 120) * 24 // 100
                    self._emit("housingfund", m.id_number, fund_balance=fund)
        if tax is not None:
            for m, part in zip(earners, self._split(tax, len(earners)), strict=True):
                self._emit("tax", m.id_number, annual_taxable_income=part)
        annual_land = 12 * land + rng.randrange(12) if land else 0
        holders = earners[:2]
        for m, part in zip(holders, self._split(annual_land, len(holders)), strict=True):
            self._emit("agriculture", m.id_number, annual_land_income=part)

    def _assets(
        self, ms: list[_Member], total: int, sec_pct: int, wealth_pct: int, ins_pct: int,
        min_accounts: int,
    ) -> None:  # fmt: skip
        """Place ``total`` fen: deposits, wealth products, securities, insurance cash value."""
        rng = self.rng
        sec, wealth, ins = (total * p // 100 for p in (sec_pct, wealth_pct, ins_pct))
        deposits = total - sec - wealth - ins
        if not self.banks:
            sec, deposits, wealth = sec + deposits + wealth, 0, 0
        accounts = [(m.id_number, b) for m in ms for b in self.accounts[m.id_number]]
        head = ms[0].id_number
        if deposits + wealth and len(accounts) < min_accounts:
            held = self.accounts[head]
            held += self._pick_banks(min_accounts - len(accounts), held)
            accounts = [(m.id_number, b) for m in ms for b in self.accounts[m.id_number]]
        if accounts:
            shares = self._split(deposits, len(accounts))
            picked = rng.sample(range(len(accounts)), rng.randint(1, len(accounts)))
            products = dict(zip(picked, self._split(wealth, len(picked)), strict=True))
            for i, ((pid, bank), dep) in enumerate(zip(accounts, shares, strict=True)):
                if dep > 1 and rng.random() < 0.12:  # a second account at the same bank
                    first = rng.randint(1, dep - 1)
                    self._emit(bank, pid, deposits=first)
                    dep -= first
                self._emit(bank, pid, deposits=dep, wealth_products=products.get(i, 0))
        adults = [m.id_number for m in ms if m.age >= 18] or [head]
        holders = rng.sample(adults, min(len(adults), rng.randint(1, 2)))
        for pid, part in zip(holders, self._split(sec, len(holders)), strict=True):
            for piece in self._split(part, 2) if rng.random() < 0.2 else [part]:
                self._emit("securities", pid, securities_value=piece)
        insured = rng.sample(ms, min(len(ms), rng.randint(1, 2)))
        for m, part in zip(insured, self._split(ins, len(insured)), strict=True):
            self._emit("insurance", m.id_number, insurance_cash_value=part)

    def _property(
        self, ms: list[_Member], homes: int, shops: int, cars: int, firms: int, split: bool = False
    ) -> None:
        rng = self.rng
        owners = [m.id_number for m in ms if m.age >= 18][:2]
        counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for n in range(homes):
            counts[owners[n % len(owners)] if split else rng.choice(owners)][0] += 1
        for _ in range(shops):
            counts[rng.choice(owners)][1] += 1
        for pid, (res, com) in counts.items():
            self._emit("realestate", pid, residential_properties=res, commercial_properties=com)
        for _ in range(cars):
            value = rng.randint(30_000, 300_000) * _YUAN
            self._emit("vehicles", rng.choice(owners), vehicles=1, vehicle_value=value)
        for _ in range(firms):
            capital = rng.randint(10, 500) * 10_000 * _YUAN
            self._emit("business", rng.choice(owners), enterprises=1, registered_capital=capital)

    def _misc(self, ms: list[_Member], *, poor: bool) -> None:
        """Facts that do not decide 低保 but a caseworker sees: study, illness, disability."""
        rng = self.rng
        for m in ms:
            pid = m.id_number
            if m.student:
                tuition = 0 if m.age <= 14 else rng.randint(15, 40 if m.age <= 17 else 80) * 100
                self._emit("education", pid, enrolled_students=1, annual_tuition=tuition * _YUAN)
            if rng.random() < (0.5 if m.age >= 60 else 0.15):
                cost = rng.randint(200, 5_000 if rng.random() < 0.8 else 60_000) * _YUAN
                self._emit("medical", pid, annual_out_of_pocket=cost)
            if rng.random() < (0.08 if poor else 0.02):
                self._emit("disability", pid, severe_disability_members=1)
            if poor and rng.random() < 0.08:
                self._emit("civil", pid, enrolled_assistance_members=1)


def _write(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path

"""Dated policy parameters per region, read from TOML data files (in the style of OpenFisca).

A parameter has a unit, a description and a list of values, each with the date it takes
effect and the legal reference it comes from. The value in force on a date is the last one
that started on or before it; a date before the first value has no value at all.

:func:`check` validates a file and names the line of every problem, for ``hedui policy check``.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from hedui.core.errors import PolicyError
from hedui.core.policy import monitoring
from hedui.core.policy.monitoring import MonitoringRules

UNITS = ("fen/person/month", "fen", "months", "count", "percent", "years")
DISCLOSURES = ("figures", "outcomes")


@dataclass(frozen=True)
class Declaration:
    """What the rules expect of a parameter: its unit and a plausible range of values.

    The range catches a slip of the pen, not a policy choice: a standard of 1320 fen (13.20
    yuan, a hundred times too small) or an asset limit of 2400 months is refused by name.
    """

    unit: str
    low: int
    high: int


# Every parameter the rules read. A name not listed here is a typo that would silently switch
# a rule off, so it is an error.
DECLARED: Mapping[str, Declaration] = {
    "dibao_standard": Declaration("fen/person/month", 20_000, 500_000),  # 200–5000 yuan
    "dibao_asset_months": Declaration("months", 1, 120),
    "dibao_max_residential": Declaration("count", 0, 5),
    "dibao_max_vehicles": Declaration("count", 0, 5),
    "dibao_max_enterprises": Declaration("count", 0, 5),
    "dibian_income_percent": Declaration("percent", 100, 300),
    "zhichu_expenditure_share_percent": Declaration("percent", 10, 100),
    "tekun_support_percent": Declaration("percent", 100, 300),
    "tekun_working_age_min": Declaration("years", 14, 18),
    "tekun_working_age_max": Declaration("years", 50, 70),
    "consent_validity_months": Declaration("months", 1, 36),
    "standing_consent_validity_months": Declaration("months", 1, 60),
}


@dataclass(frozen=True)
class DatedValue:
    start: dt.date
    value: int
    reference: str


@dataclass(frozen=True)
class Parameter:
    name: str
    unit: str
    description: str
    values: tuple[DatedValue, ...]

    def at(self, date: dt.date) -> DatedValue:
        current = None
        for v in self.values:
            if v.start <= date:
                current = v
        if current is None:
            raise PolicyError(
                f"{self.name} has no value before {self.values[0].start.isoformat()}; "
                f"{date.isoformat()} is too early"
            )
        return current


@dataclass(frozen=True)
class RegionParameters:
    region: str
    name: str
    parameters: Mapping[str, Parameter]
    digest: str  # SHA-256 of the file's bytes
    disclosures: Mapping[str, str] = field(default_factory=dict)
    source: str = ""
    # programme -> rule ids whose figures the law requires to be shown (e.g. to the applicant)
    by_law: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # 主动发现: which events re-check a monitored household (None: the region monitors none)
    monitoring: MonitoringRules | None = None

    def get(self, name: str, date: dt.date) -> DatedValue:
        try:
            param = self.parameters[name]
        except KeyError:
            raise PolicyError(f"region {self.region} has no parameter {name}") from None
        return param.at(date)

    def disclosure(self, program: str) -> str:
        return self.disclosures.get(program, "outcomes")

    def disclosed_by_law(self, program: str, rule_id: str) -> bool:
        return rule_id in self.by_law.get(program, ())


@dataclass(frozen=True)
class Problem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


def _line_of(text: str, *needles: str, after: int = 0) -> int:
    """The first line (1-based) at or after ``after`` that holds every needle; 0 if none."""
    for number, line in enumerate(text.splitlines(), start=1):
        if number >= after and all(n in line for n in needles):
            return number
    return 0


def _problems(doc: dict[str, Any], text: str) -> list[Problem]:
    problems: list[Problem] = []
    if not isinstance(doc.get("region"), str) or not doc["region"]:
        problems.append(
            Problem(_line_of(text, "region"), 'the file must name its region: region = "…"')
        )
    for program, body in doc.get("programs", {}).items():
        disclosure = body.get("disclosure", "outcomes") if isinstance(body, dict) else None
        if disclosure not in DISCLOSURES:
            problems.append(
                Problem(
                    _line_of(text, f"[programs.{program}]"),
                    f"programs.{program}.disclosure must be one of {', '.join(DISCLOSURES)}",
                )
            )
        by_law = body.get("disclosed_by_law", []) if isinstance(body, dict) else []
        if not isinstance(by_law, list) or not all(isinstance(r, str) for r in by_law):
            problems.append(
                Problem(
                    _line_of(text, "disclosed_by_law"),
                    f"programs.{program}.disclosed_by_law must be a list of rule ids, "
                    'e.g. ["income"]',
                )
            )
    if "monitoring" in doc:
        problems += [
            Problem(line, message)
            for line, message in monitoring.problems(
                doc["monitoring"], lambda *needles: _line_of(text, *needles)
            )
        ]
    params = doc.get("parameters", {})
    if not params:
        problems.append(Problem(0, "the file defines no [parameters.*]"))
    for name, body in params.items():
        header = _line_of(text, f"[parameters.{name}]")
        declared = DECLARED.get(name)
        if declared is None:
            close = difflib.get_close_matches(name, DECLARED, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            problems.append(
                Problem(
                    header,
                    f"unknown parameter {name}: no rule reads it; {hint}known: {', '.join(DECLARED)}",
                )
            )
            continue
        if not isinstance(body, dict):
            problems.append(Problem(header, f"parameters.{name} must be a table"))
            continue
        if body.get("unit") != declared.unit:
            problems.append(
                Problem(
                    _line_of(text, "unit", after=header) or header,
                    f"parameters.{name}: unit must be {declared.unit!r}",
                )
            )
        values = body.get("values")
        if not isinstance(values, list) or not values:
            problems.append(Problem(header, f"parameters.{name} has no values"))
            continue
        previous: dt.date | None = None
        for i, v in enumerate(values):
            start = v.get("start") if isinstance(v, dict) else None
            where = f"parameters.{name}.values[{i}]"
            line = (
                _line_of(text, f"start = {start.isoformat()}", after=header)
                if isinstance(start, dt.date)
                else 0
            )
            line = line or header
            if not isinstance(v, dict):
                problems.append(
                    Problem(header, f"{where} must be {{ start = …, value = …, reference = … }}")
                )
                continue
            if not isinstance(start, dt.date) or isinstance(start, dt.datetime):
                problems.append(Problem(line, f"{where}: start must be a date such as 2025-07-01"))
                continue
            value = v.get("value")
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                problems.append(
                    Problem(
                        line,
                        f"{where}: value must be a non-negative whole number in {body.get('unit')} (no decimals: money is in fen)",
                    )
                )
            elif not declared.low <= value <= declared.high:
                problems.append(
                    Problem(
                        line,
                        f"{where}: {value} {declared.unit} is outside the plausible range "
                        f"{declared.low}–{declared.high}; check the unit (money is in fen)",
                    )
                )
            ref = v.get("reference")
            if not isinstance(ref, str) or not ref.strip():
                problems.append(Problem(line, f"{where}: every value needs its legal reference"))
            if previous is not None and start <= previous:
                problems.append(
                    Problem(line, f"{where}: dates must increase ({start} is not after {previous})")
                )
            extra = set(v) - {"start", "value", "reference"}
            if extra:
                problems.append(
                    Problem(line, f"{where}: unknown key(s) {', '.join(sorted(extra))}")
                )
            previous = start
    return problems


def check(data: bytes) -> list[Problem]:
    """Every problem of a parameter file, each with its line number."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return [Problem(0, f"not UTF-8 text: {e.reason}")]
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        return [Problem(int(m.group(1)) if m else 0, f"not valid TOML: {e}")]
    return _problems(doc, text)


def parse(data: bytes, source: str) -> RegionParameters:
    problems = check(data)
    if problems:
        raise PolicyError(f"{source}: " + "; ".join(str(p) for p in problems))
    doc = tomllib.loads(data.decode("utf-8"))
    params = {
        name: Parameter(
            name,
            body["unit"],
            str(body.get("description", "")),
            tuple(DatedValue(v["start"], v["value"], v["reference"]) for v in body["values"]),
        )
        for name, body in doc["parameters"].items()
    }
    disclosures = {
        p: str(b.get("disclosure", "outcomes")) for p, b in doc.get("programs", {}).items()
    }
    by_law = {
        p: tuple(str(r) for r in b.get("disclosed_by_law", []))
        for p, b in doc.get("programs", {}).items()
    }
    return RegionParameters(
        doc["region"],
        str(doc.get("name", doc["region"])),
        params,
        hashlib.sha256(data).hexdigest(),
        disclosures,
        str(doc.get("source", "")),
        by_law,
        monitoring.parse(doc["monitoring"]) if "monitoring" in doc else None,
    )


def load_file(path: Path) -> RegionParameters:
    return parse(path.read_bytes(), str(path))


def load_builtin() -> dict[str, RegionParameters]:
    """Every region file shipped with hedui, by region name."""
    out: dict[str, RegionParameters] = {}
    folder = resources.files("hedui.core.policy") / "params"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            p = parse(entry.read_bytes(), f"params/{entry.name}")
            out[p.region] = p
    return out

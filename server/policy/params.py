"""Dated policy parameters per region, read from TOML data files (in the style of OpenFisca).

A parameter has a unit, a description and a list of values, each with the date it takes
effect and the legal reference it comes from. The value in force on a date is the last one
that started on or before it; a date before the first value has no value at all.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from hedui.server.errors import PolicyError


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

    def get(self, name: str, date: dt.date) -> DatedValue:
        try:
            return self.parameters[name].at(date)
        except KeyError:
            raise PolicyError(f"region {self.region} has no parameter {name}") from None


def parse(data: bytes, source: str) -> RegionParameters:
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise PolicyError(f"{source}: not a TOML parameter file: {e}") from None
    params: dict[str, Parameter] = {}
    for name, body in doc.get("parameters", {}).items():
        values: list[DatedValue] = []
        for i, v in enumerate(body.get("values", [])):
            start, value, ref = v.get("start"), v.get("value"), v.get("reference")
            where = f"{source}: parameters.{name}.values[{i}]"
            if not isinstance(start, dt.date) or isinstance(start, dt.datetime):
                raise PolicyError(f"{where}: start must be a date such as 2025-07-01")
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise PolicyError(f"{where}: value must be a non-negative integer")
            if not isinstance(ref, str) or not ref.strip():
                raise PolicyError(f"{where}: every value needs its legal reference")
            if values and start <= values[-1].start:
                raise PolicyError(f"{where}: dates must increase")
            values.append(DatedValue(start, value, ref))
        if not values:
            raise PolicyError(f"{source}: parameters.{name} has no values")
        params[name] = Parameter(
            name, str(body.get("unit", "")), str(body.get("description", "")), tuple(values)
        )
    region = doc.get("region")
    if not isinstance(region, str) or not region:
        raise PolicyError(f"{source}: the file must name its region")
    return RegionParameters(
        region, str(doc.get("name", region)), params, hashlib.sha256(data).hexdigest()
    )


def load_file(path: Path) -> RegionParameters:
    return parse(path.read_bytes(), str(path))


def load_builtin() -> dict[str, RegionParameters]:
    """Every region file shipped with hedui, by region name."""
    out: dict[str, RegionParameters] = {}
    folder = resources.files("hedui.server.policy") / "params"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            p = parse(entry.read_bytes(), f"params/{entry.name}")
            out[p.region] = p
    return out

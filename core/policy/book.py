"""The programmes and regions a deployment applies, and the policy version of each verdict.

The policy version is the SHA-256 of the rule code (the programme's modules) and the region's
parameter file, so any change to either gives a new version in every verdict and audit entry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from importlib import resources

from hedui.core.deployment import BANK, DEPARTMENT_KINDS
from hedui.core.errors import PolicyError
from hedui.core.policy import dibao, dibian, tekun, zhichu
from hedui.core.policy.engine import Evaluation, HouseholdFacts
from hedui.core.policy.params import RegionParameters, load_builtin

Evaluate = Callable[[HouseholdFacts, RegionParameters, dt.date], Evaluation]


@dataclass(frozen=True)
class Program:
    name: str
    title_zh: str
    title_en: str
    standard: str  # the parameter whose first date is the programme's first day
    evaluate: Evaluate


PROGRAMS: Mapping[str, Program] = {
    m.NAME: Program(m.NAME, m.TITLE[0], m.TITLE[1], m.STANDARD, m.evaluate)
    for m in (dibao, dibian, zhichu, tekun)
}
_RULE_MODULES = (
    "engine.py",
    "params.py",
    "book.py",
    "rules.py",
    "dibao.py",
    "dibian.py",
    "zhichu.py",
    "tekun.py",
)


def _code_digest() -> bytes:
    h = hashlib.sha256(b"hedui/policy-code/v1")
    folder = resources.files("hedui.core.policy")
    for name in _RULE_MODULES:
        h.update(name.encode() + b"\0" + (folder / name).read_bytes())
    return h.digest()


@dataclass(frozen=True)
class Applied:
    evaluation: Evaluation
    policy_version: str


# field -> the kind of source that holds it (a figure from one kind is one source's own)
FIELD_KINDS: Mapping[str, str] = {
    f.name: k.kind for k in (*DEPARTMENT_KINDS.values(), BANK) for f in k.fields
}


class PolicyBook:
    def __init__(self, regions: Mapping[str, RegionParameters], default_region: str) -> None:
        if default_region not in regions:
            raise PolicyError(f"no parameter file for the default region {default_region!r}")
        self.regions = dict(regions)
        self.default_region = default_region
        self._code = _code_digest()

    @classmethod
    def builtin(cls, default_region: str = "demo") -> PolicyBook:
        return cls(load_builtin(), default_region)

    def version(self, region: str) -> str:
        params = self.regions[region]
        return hashlib.sha256(self._code + params.digest.encode()).hexdigest()[:32]

    def check(self, program: str, region: str, as_of: dt.date) -> None:
        """Raise PolicyError when the programme, region or date has no policy in force."""
        if program not in PROGRAMS:
            raise PolicyError(f"unknown programme {program!r}; known: {', '.join(PROGRAMS)}")
        if region not in self.regions:
            raise PolicyError(f"unknown region {region!r}; known: {', '.join(self.regions)}")
        self.regions[region].get(PROGRAMS[program].standard, as_of)

    def apply(self, program: str, region: str, facts: HouseholdFacts, as_of: dt.date) -> Applied:
        """Evaluate, then keep what the programme's disclosure setting lets the intake see."""
        self.check(program, region, as_of)
        params = self.regions[region]
        evaluation = PROGRAMS[program].evaluate(facts, params, as_of)
        if params.disclosure(program) == "outcomes":
            evaluation = replace(
                evaluation, rules=tuple(r.outcome_only() for r in evaluation.rules)
            )
        else:

            def sources_of(fields: tuple[str, ...]) -> int:
                return len({FIELD_KINDS[f] for f in fields if facts.totals.get(f, 0)})

            evaluation = replace(
                evaluation,
                rules=tuple(
                    r.minimised(sources_of, params.disclosed_by_law(program, r.id))
                    for r in evaluation.rules
                ),
            )
        return Applied(evaluation, self.version(region))

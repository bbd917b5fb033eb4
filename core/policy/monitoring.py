"""主动发现 rules as data: which department events re-check a monitored household, when they
raise an alert, and the deadline a caseworker has to follow one up (派单 → 反馈).

They live in the region's parameter file, beside the programmes' parameters::

    [monitoring]
    deadline_days = 15          # a visit within this many days of the alert
    escalate_after_days = 5     # an overdue alert goes up one level after this many more days
    reference = "…"

    [monitoring.events.medical_self_pay]
    source = "medical"          # the only connector kind that may report it
    threshold_fen = 4000000     # the 12-month running total that raises it (40,000 yuan)
    alert = "always"            # or "on_change": only when the re-check's decision changes
    suggest = "zhichu"          # the programme the caseworker should look at ("" = the same)
    reference = "…"

:func:`problems` validates the section for ``hedui policy check``; :func:`parse` builds the
frozen rules the service applies.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hedui.core.deployment import DEPARTMENT_KINDS, EVENT_AMOUNTS, REGISTRY_KIND


@dataclass(frozen=True)
class EventKind:
    """An event a department may push, in words; whether it carries an amount is the
    deployment's (``core.deployment.EVENT_AMOUNTS``, which connectors check too)."""

    name: str
    zh: str
    en: str

    @property
    def amount(self) -> bool:
        return EVENT_AMOUNTS[self.name]


EVENT_KINDS: Mapping[str, EventKind] = {
    k.name: k
    for k in (
        EventKind("death", "家庭成员死亡", "a household member died"),
        EventKind("unemployment", "家庭成员登记失业", "a member registered as unemployed"),
        EventKind(
            "medical_self_pay",
            "家庭成员年度医疗自付费用超过",
            "a member's medical self-pay over 12 months passed",
        ),
        EventKind("disability", "家庭成员新认定残疾", "a member was newly certified disabled"),
        EventKind("vehicle", "家庭成员新登记机动车", "a member registered a vehicle"),
        EventKind(
            "commercial_property",
            "家庭成员新登记商业用房",
            "a member registered commercial property",
        ),
        EventKind("business", "家庭成员新登记经营主体", "a member registered a business"),
    )
}
ALERT_WHEN = ("always", "on_change")
PROGRAMS = ("dibao", "dibian", "zhichu", "tekun")
DAYS = (1, 90)  # a plausible deadline or escalation delay, in days


@dataclass(frozen=True)
class EventRule:
    kind: EventKind
    source: str  # the connector kind that may report it
    alert: str  # "always" or "on_change"
    threshold_fen: int | None  # amount kinds: the running total that raises it
    suggest: str  # the programme to look at ("" = the monitored one)
    reference: str

    def crossed(self, amount_fen: int, before_fen: int | None) -> bool:
        """Whether a reported amount raises the event: at or over the threshold now, and not
        already at the previous report (a running total that stays high raises it once)."""
        if self.threshold_fen is None:
            return True
        return amount_fen >= self.threshold_fen and (
            before_fen is None or before_fen < self.threshold_fen
        )


@dataclass(frozen=True)
class MonitoringRules:
    deadline_days: int
    escalate_after_days: int
    reference: str
    events: Mapping[str, EventRule]

    def rule(self, kind: str) -> EventRule | None:
        return self.events.get(kind)


def _days(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and DAYS[0] <= value <= DAYS[1]


def problems(section: Any, line_of: Callable[..., int]) -> list[tuple[int, str]]:
    """Every problem of a ``[monitoring]`` table as (line, message); ``line_of(*needles)``
    finds a line of the file."""
    if not isinstance(section, dict):
        return [(line_of("monitoring"), "monitoring must be a table ([monitoring])")]
    out: list[tuple[int, str]] = []
    head = line_of("[monitoring]")
    for name in ("deadline_days", "escalate_after_days"):
        if not _days(section.get(name)):
            out.append(
                (
                    line_of(name) or head,
                    f"monitoring.{name} must be a whole number of days, {DAYS[0]} to {DAYS[1]}",
                )
            )
    if not isinstance(section.get("reference"), str) or not section["reference"].strip():
        out.append((head, "monitoring needs its reference (the provision it comes from)"))
    extra = set(section) - {"deadline_days", "escalate_after_days", "reference", "events"}
    if extra:
        out.append((head, f"monitoring: unknown key(s) {', '.join(sorted(extra))}"))
    events = section.get("events", {})
    if not isinstance(events, dict) or not events:
        return [*out, (head, "monitoring lists no [monitoring.events.<kind>]")]
    sources = (*DEPARTMENT_KINDS, REGISTRY_KIND)
    for kind, body in events.items():
        where = f"monitoring.events.{kind}"
        at = line_of(f"[{where}]") or head
        spec = EVENT_KINDS.get(kind)
        if spec is None:
            close = difflib.get_close_matches(kind, EVENT_KINDS, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            out.append((at, f"unknown event kind {kind}; {hint}known: {', '.join(EVENT_KINDS)}"))
            continue
        if not isinstance(body, dict):
            out.append((at, f"{where} must be a table"))
            continue
        if body.get("source") not in sources:
            out.append((at, f"{where}.source must be a department: one of {', '.join(sources)}"))
        if body.get("alert", "always") not in ALERT_WHEN:
            out.append((at, f"{where}.alert must be one of {', '.join(ALERT_WHEN)}"))
        if body.get("suggest", "") not in ("", *PROGRAMS):
            out.append((at, f"{where}.suggest must be a programme: {', '.join(PROGRAMS)}"))
        threshold = body.get("threshold_fen")
        if spec.amount:
            if not (isinstance(threshold, int) and not isinstance(threshold, bool)) or (
                threshold <= 0
            ):
                out.append((at, f"{where}.threshold_fen must be a positive amount in fen"))
        elif threshold is not None:
            out.append((at, f"{where}: a {kind} event has no amount, so no threshold_fen"))
        if not isinstance(body.get("reference"), str) or not body["reference"].strip():
            out.append((at, f"{where} needs its reference"))
        extra = set(body) - {"source", "alert", "suggest", "threshold_fen", "reference"}
        if extra:
            out.append((at, f"{where}: unknown key(s) {', '.join(sorted(extra))}"))
    return out


def parse(section: Mapping[str, Any]) -> MonitoringRules:
    """The rules of a ``[monitoring]`` table that :func:`problems` accepted."""
    return MonitoringRules(
        int(section["deadline_days"]),
        int(section["escalate_after_days"]),
        str(section["reference"]),
        {
            kind: EventRule(
                EVENT_KINDS[kind],
                str(body["source"]),
                str(body.get("alert", "always")),
                None if body.get("threshold_fen") is None else int(body["threshold_fen"]),
                str(body.get("suggest", "")),
                str(body["reference"]),
            )
            for kind, body in section["events"].items()
        },
    )

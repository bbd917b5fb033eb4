"""Household facts in, explained verdict out: the types every programme's rules share.

A rule is passed, failed or undecided. Undecided is what a missing or invalid source gives:
it is never turned into a pass. The decision is INELIGIBLE if any rule failed, else
NEEDS_REVIEW if any is undecided, else ELIGIBLE.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from hedui.core.clock import age_on


class Outcome(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    UNDECIDED = "undecided"


class Decision(enum.Enum):
    ELIGIBLE = "ELIGIBLE"
    INELIGIBLE = "INELIGIBLE"
    NEEDS_REVIEW = "NEEDS_REVIEW"


@dataclass(frozen=True)
class Member:
    relation: str
    birth_date: dt.date
    applicant: bool = False  # the member whose ID number was asked about
    signed: bool = False  # among the consent's signers, as the registry matched them

    def age_on(self, date: dt.date) -> int:
        return age_on(self.birth_date, date)


@dataclass(frozen=True)
class Figure:
    name: str
    value: int
    comparison: str
    threshold: int
    unit: str
    fields: tuple[str, ...] = ()  # the source fields the value is the total of


OUTCOME_WORDS = {
    Outcome.PASSED: ("符合", "met"),
    Outcome.FAILED: ("不符合", "not met"),
    Outcome.UNDECIDED: ("无法判断，需人工复核", "undecided, needs review"),
}


def outcome_words(outcome: Outcome, title_zh: str, title_en: str) -> tuple[str, str]:
    """A rule's messages when no figure may be shown: its title and its outcome in words."""
    zh, en = OUTCOME_WORDS[outcome]
    return f"{title_zh}：{zh}", f"{title_en}: {en}"


@dataclass(frozen=True)
class RuleResult:
    """One rule's outcome, explained so a caseworker can read it aloud to the applicant."""

    id: str
    outcome: Outcome
    value: int | None
    threshold: int | None
    comparison: str
    unit: str
    message_zh: str
    message_en: str
    missing_sources: tuple[str, ...] = ()
    figures: tuple[Figure, ...] = ()
    references: tuple[str, ...] = ()
    title_zh: str = ""
    title_en: str = ""
    value_fields: tuple[str, ...] = ()  # the source fields ``value`` is the total of
    threshold_fields: tuple[str, ...] = ()  # for a threshold computed from the household's data
    message_has_figures: bool = True  # False: the messages name no household figure
    # each group must also come from two or more sources: a value that, with another figure
    # shown, gives a group's total by subtraction (zhichu: income - net income = expenditure)
    value_groups: tuple[tuple[str, ...], ...] = ()

    def minimised(self, sources_of: Callable[[tuple[str, ...]], int], by_law: bool) -> RuleResult:
        """Disclosure "figures": keep a figure only when it is the total of at least two
        sources that answered with non-zero data (``sources_of(fields)`` counts them), or when
        the region's policy names the rule as disclosed by law; otherwise say passed or failed
        against the threshold, so that no disclosed figure is one department's own."""
        if by_law:
            return self
        figures = tuple(f for f in self.figures if sources_of(f.fields) >= 2)
        value_ok = self.value is None or (
            sources_of(self.value_fields) >= 2
            and all(sources_of(g) >= 2 for g in self.value_groups)
        )
        threshold_ok = not self.threshold_fields or sources_of(self.threshold_fields) >= 2
        if value_ok and threshold_ok and figures == self.figures:
            return self
        shown = self.outcome_only()
        threshold = self.threshold if threshold_ok else None
        zh, en = shown.message_zh, shown.message_en
        if not self.message_has_figures:
            zh, en = self.message_zh, self.message_en
        elif threshold is not None and self.comparison:
            text = f"{yuan(threshold)} 元" if self.unit == "fen" else str(threshold)
            text_en = f"{yuan(threshold)} yuan" if self.unit == "fen" else str(threshold)
            zh, en = f"{zh}（{self.comparison} {text}）", f"{en} ({self.comparison} {text_en})"
        return replace(
            shown,
            value=self.value if value_ok else None,
            threshold=threshold,
            message_zh=zh,
            message_en=en,
            figures=figures,
            value_fields=self.value_fields,
            threshold_fields=self.threshold_fields,
            value_groups=self.value_groups,
        )

    def outcome_only(self) -> RuleResult:
        """The same result with every household figure removed (disclosure "outcomes")."""
        zh, en = outcome_words(self.outcome, self.title_zh, self.title_en)
        return RuleResult(
            self.id,
            self.outcome,
            None,
            None,
            self.comparison,
            self.unit,
            zh,
            en,
            missing_sources=self.missing_sources,
            references=self.references,
            title_zh=self.title_zh,
            title_en=self.title_en,
        )


@dataclass(frozen=True)
class HouseholdFacts:
    """What a programme may see: members' attributes and decrypted household totals.

    ``missing`` maps a field to the sources whose answer for it is missing or invalid.
    """

    members: tuple[Member, ...]
    totals: Mapping[str, int]
    missing: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.members)

    def missing_for(self, fields: Iterable[str]) -> tuple[str, ...]:
        out: set[str] = set()
        for f in fields:
            out.update(self.missing.get(f, ()))
            if f not in self.totals and f not in self.missing:
                out.add(f"no source for {f}")
        return tuple(sorted(out))

    def get(self, name: str) -> int:
        return self.totals[name]


@dataclass(frozen=True)
class Evaluation:
    decision: Decision
    benefit_fen: int
    rules: tuple[RuleResult, ...]


def decide(rules: Iterable[RuleResult]) -> Decision:
    outcomes = {r.outcome for r in rules}
    if Outcome.FAILED in outcomes:
        return Decision.INELIGIBLE
    if Outcome.UNDECIDED in outcomes:
        return Decision.NEEDS_REVIEW
    return Decision.ELIGIBLE


# The Chinese names of the sources and fields a rule may miss, so that the Chinese text of a
# rule names them in Chinese (the English text and ``missing_sources`` keep the exact ids).
SOURCE_ZH: Mapping[str, str] = {
    "registry": "户籍",
    "hrss": "人社",
    "tax": "税务",
    "realestate": "不动产登记",
    "vehicles": "公安交管",
    "business": "市场监管",
    "medical": "医保",
    "housingfund": "公积金",
    "disability": "残联",
    "civil": "民政",
    "education": "教育",
    "agriculture": "农业农村",
    "securities": "证券登记",
    "insurance": "保险",
}
FIELD_ZH: Mapping[str, str] = {
    "monthly_wage": "月工资",
    "monthly_pension": "月养老金",
    "monthly_unemployment_benefit": "月失业保险金",
    "annual_taxable_income": "年应纳税所得",
    "annual_land_income": "年土地承包收入",
    "deposits": "存款",
    "wealth_products": "理财产品",
    "securities_value": "证券市值",
    "insurance_cash_value": "保险现金价值",
    "residential_properties": "住宅",
    "commercial_properties": "商业用房",
    "vehicles": "机动车辆",
    "vehicle_value": "车辆价值",
    "enterprises": "经营企业",
    "registered_capital": "注册资本",
    "annual_out_of_pocket": "年医疗自付费用",
    "fund_balance": "公积金余额",
    "severe_disability_members": "重度残疾成员",
    "enrolled_assistance_members": "已享受救助成员",
    "enrolled_students": "在校学生",
    "annual_tuition": "年学费",
}
NO_SOURCE = "no source for "  # how HouseholdFacts.missing_for names a field nobody declares
CUSTODIAN = "key custodian"  # the prefix of a field the key custodian did not decrypt


def source_zh(source: str) -> str:
    """A missing source as the Chinese text names it: ``bank-07`` → 07号银行, ``hrss`` → 人社;
    a total the key custodian withheld because a connector marked the household (``key
    custodian: hrss: stored data fails …``) by that connector."""
    if source.startswith(NO_SOURCE):
        name = FIELD_ZH.get(source[len(NO_SOURCE) :], "部分数据")
        return f"{name}（未接入数据来源）"
    if source.startswith(CUSTODIAN):
        named = source[len(CUSTODIAN) :].removeprefix(": ").split(": ", 1)[0]
        if named in SOURCE_ZH or (named.startswith("bank-") and named[5:].isdigit()):
            return source_zh(named)
        return "密钥托管方（未予解密）"
    if source.startswith("bank-") and source[5:].isdigit():
        return f"{source[5:]}号银行"
    return SOURCE_ZH.get(source, "其他数据来源")


def undecided(
    rule_id: str,
    missing: tuple[str, ...],
    unit: str,
    zh: str,
    en: str,
    references: tuple[str, ...] = (),
) -> RuleResult:
    sources = "、".join(dict.fromkeys(source_zh(s) for s in missing))
    return RuleResult(
        rule_id,
        Outcome.UNDECIDED,
        None,
        None,
        "",
        unit,
        f"{zh}：无法判断，缺少数据来源：{sources}",
        f"{en}: undecided, missing source(s) {', '.join(missing)}",
        missing_sources=missing,
        references=references,
        title_zh=zh,
        title_en=en,
    )


def round_up_to_yuan(fen: int) -> int:
    return -(-fen // 100) * 100


def yuan(fen: int, *, grouped: bool = False) -> str:
    """Fen as a yuan amount for a message, computed in integers (no floats for money); with
    ``grouped``, thousands separated by commas (a printed report)."""
    sign = "-" if fen < 0 else ""
    whole = f"{abs(fen) // 100:,}" if grouped else str(abs(fen) // 100)
    return f"{sign}{whole}.{abs(fen) % 100:02d}"

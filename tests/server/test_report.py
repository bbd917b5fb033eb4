"""The 核对报告's rendering from a kept verdict and its audit entry (no deployment needed)."""

from __future__ import annotations

import datetime as dt

import pytest

from hedui.audit.checkpoint import Checkpoint
from hedui.core.clock import Clock
from hedui.proto.v1 import audit_pb2, common_pb2, connector_pb2, verification_pb2
from hedui.server.report import ReportError, ReportSource, render_html, yuan
from hedui.server.requests import without_figures

CLOCK = Clock(source=lambda z: dt.datetime(2026, 11, 24, 9, 30, tzinfo=z))
NOTE = b"hedui.example/log\n8\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\xe2\x80\x94 x y\n"


def _verdict() -> verification_pb2.Verdict:
    return verification_pb2.Verdict(
        request_id="R-7",
        decision=common_pb2.ELIGIBLE,
        benefit_fen=123456,
        household_size=2,
        program="dibao",
        region="demo",
        as_of="2026-11-24",
        policy_version="abc",
        rules=[
            verification_pb2.RuleOutcome(
                id="income",
                outcome=common_pb2.PASSED,
                value=100000,
                threshold=252000,
                comparison="<",
                unit="fen",
                title_zh="家庭月收入",
                title_en="Monthly income",
                message_zh="家庭月收入 1000.00 元，低于 2520.00 元",
                references=["示范地区 第一条"],
            )
        ],
        members=[
            verification_pb2.HouseholdMember(
                relation=connector_pb2.HEAD,
                birth_year=1980,
                applicant=True,
                signed=True,
                masked_id="330**************5",
            ),
            verification_pb2.HouseholdMember(relation=connector_pb2.CHILD, birth_year=2015),
        ],
        figures_opening=b"\x01" * 32,
        failures=[common_pb2.SourceFailure(connector_id="bank-07", reason="timed out")],
    )


def _source(verdict: verification_pb2.Verdict, caseworker: str = "li.na") -> ReportSource:
    entry = audit_pb2.AuditEntry(time_unix_ms=1_795_000_000_000, caller="intake-hz")
    entry.verdict.CopyFrom(
        audit_pb2.VerdictEntry(
            request_id="R-7",
            caseworker_id=caseworker,
            connectors_answered=["civil", "hrss", "bank-01"],
            consent=audit_pb2.ConsentRecord(case_number="C-9", signed_on="2026-11-20"),
        )
    )
    cp = Checkpoint("hedui.example/log", 8, b"\0" * 32)
    return ReportSource(verdict, entry, 5, NOTE, cp, proven=True)


def test_a_report_says_everything_in_chinese() -> None:
    html = render_html(_source(_verdict()), "zh", CLOCK, CLOCK.now())
    for text in (
        "最低生活保障", "准予", "1,234.56 元", "户主 · 申请人", "330**************5", "子女",
        "家庭月收入", "示范地区 第一条", "C-9", "li.na", "intake-hz", "银行 bank-07",
        "timed out", "hedui audit prove 5", "民政", "银行 1 家",
        "2026-11-24 09:30:00 +08:00",
    ):  # fmt: skip
        assert text in html, text
    assert "<svg" in html


def test_english_and_an_unknown_language() -> None:
    html = render_html(_source(_verdict()), "en", CLOCK, CLOCK.now())
    assert "Eligible" in html and "Monthly income" in html and "¥1,234.56" in html
    with pytest.raises(ReportError, match="zh or en"):
        render_html(_source(_verdict()), "fr", CLOCK, CLOCK.now())


def test_a_verdict_purged_by_retention_still_prints_its_decision() -> None:
    kept = verification_pb2.Verdict.FromString(
        without_figures(_verdict().SerializeToString(deterministic=True))
    )
    html = render_html(_source(kept), "zh", CLOCK, CLOCK.now())
    assert "已按保存期限删除" in html and "准予" in html
    assert "1,234.56" not in html and "1980" not in html


def test_text_from_callers_is_escaped() -> None:
    html = render_html(
        _source(_verdict(), caseworker="<script>x</script>"), "zh", CLOCK, CLOCK.now()
    )
    assert "<script>x" not in html and "&lt;script&gt;x" in html


def test_yuan_is_exact_integer_arithmetic() -> None:
    assert yuan(0) == "0.00" and yuan(5) == "0.05" and yuan(123456789) == "1,234,567.89"
    assert yuan(-150) == "-1.50"

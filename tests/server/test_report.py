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


def _rows(html: str) -> list[str]:
    """The rules table's rows (section 4), as HTML."""
    table = html.split("四、核对规则与结果" if "四、" in html else "4. Rules and outcomes")[1]
    return table.split("</table>")[0].split("<tr>")[2:]


def test_a_figure_cell_says_whether_it_is_withheld_or_not_available() -> None:
    """Issue #25 item 13: a figure the disclosure policy withholds (the rule decided, its value
    left out) is not a figure no source gave (the rule undecided, its sources named): two
    different words, each explained under the table; never a bare dash."""
    v = _verdict()
    del v.rules[:]
    v.rules.extend(
        [
            verification_pb2.RuleOutcome(
                id="financial_assets",
                outcome=common_pb2.PASSED,
                threshold=5_000_000,
                comparison="<=",
                unit="fen",
                title_zh="家庭金融资产",
                title_en="Household financial assets",
            ),  # withheld: one bank's own figure (disclosure "figures")
            verification_pb2.RuleOutcome(
                id="income",
                outcome=common_pb2.UNDECIDED,
                unit="fen",
                missing_sources=["hrss"],
                title_zh="家庭月收入",
                title_en="Household monthly income",
            ),  # not available: hrss did not answer
        ]
    )
    html = render_html(_source(v), "zh", CLOCK, CLOCK.now())
    assets, income = _rows(html)
    assert "不予披露" in assets and "≤ 50,000.00 元" in assets and "未取得" not in assets
    assert income.count("未取得") == 2 and "不予披露" not in income
    assert "—" not in assets + income
    legend = html.split("四、核对规则与结果")[1].split("</section>")[0].split("</table>")[1]
    assert "不予披露</span>：该数值已取得，按信息披露规则不在报告中列示" in legend
    assert "未取得</span>：有数据来源未答复或答复无效" in legend
    english = render_html(_source(v), "en", CLOCK, CLOCK.now())
    assets, income = _rows(english)
    assert "withheld" in assets and income.count("not available") == 2
    assert "withheld</span>: the figure was obtained but the disclosure policy" in english
    # a report whose figures are all shown has no legend
    assert "不予披露" not in render_html(_source(_verdict()), "zh", CLOCK, CLOCK.now())
    # figures removed by retention are neither
    kept = verification_pb2.Verdict.FromString(without_figures(v.SerializeToString()))
    purged = render_html(_source(kept), "zh", CLOCK, CLOCK.now())
    assert "已删除</span>：该数值已按保存期限删除" in purged and "不予披露" not in purged


def test_a_minor_who_signed_shows_as_signed_and_is_counted() -> None:
    """Issue #25 item 13: the registry says which members signed; a minor among the signers is
    shown under 授权 as signed, as 签署人数 counts them."""
    from hedui.core.resident_id import make
    from hedui.server.application import Application
    from hedui.server.consent import Consent
    from hedui.server.registry_client import GrantedHousehold, _household
    from hedui.server.verdicts import household_members

    reply = connector_pb2.Household(
        members=[
            connector_pb2.Member(
                relation=connector_pb2.HEAD, birth_date="1980-02-02", applicant=True, signed=True
            ),
            connector_pb2.Member(
                relation=connector_pb2.CHILD, birth_date="2010-03-03", signed=True
            ),
            connector_pb2.Member(relation=connector_pb2.CHILD, birth_date="2020-04-04"),
        ],
        pseudonym=b"\1" * 32,
    )
    household = _household(reply)
    assert isinstance(household, GrantedHousehold)
    head = make("330106", dt.date(1980, 2, 2), 1)
    teen = make("330106", dt.date(2010, 3, 3), 2)
    consent = Consent("C-9", dt.date(2026, 11, 20), b"\0" * 32, (head, teen))
    app = Application("R-7", head, "dibao", "demo", consent, dt.date(2026, 11, 24))
    members = household_members(household.members, app)
    assert [m.signed for m in members] == [True, True, False]
    v = _verdict()
    del v.members[:]
    v.members.extend(members)
    source = _source(v)
    source.entry.verdict.consent.signer_audit_tokens.extend([b"a" * 16, b"b" * 16])
    html = render_html(source, "zh", CLOCK, CLOCK.now())
    assert html.count("已签署") == 2
    assert "<th>签署人数</th><td>2</td>" in html
    # a standing authorisation has no signers
    standing = Application(
        "R-8",
        head,
        "dibao",
        "demo",
        Consent("C-9", dt.date(2026, 11, 20), b"", (), campaign="C-9"),
        app.as_of,
    )
    assert not any(m.signed for m in household_members(household.members, standing))

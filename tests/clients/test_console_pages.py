"""Issue #25 item 11: what the auditor's console shows. Districts by name from the Ministry of
Civil Affairs' GB/T 2260 list of a named year, campaigns by their registered document number,
refused checks counted by reason next to the decided ones (the totals add up), an entry as a
table with its sources folded, charts the width of the page, and no row of zeros for a group
without a district.

A real `hedui console --offline` over a log written here (signed entries of one month: decided
checks in named, unknown and missing districts, refusals of several kinds, a re-verification
round without a registered campaign, one verdict with 87 sources), read with raw HTTP; the
campaign grouping also on the described entries the console reads. What the pages must show is
worked out here from the entries written, not from the console's code."""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hedui.audit.log import AuditLog
from hedui.audit.store import LogStore, open_log_engine
from hedui.connectors.population import NATIONWIDE, REGIONS
from hedui.core import signing
from hedui.core.clock import DEPLOYMENT
from hedui.core.workdir import Workdir
from hedui.proto.v1 import audit_pb2, common_pb2
from tests.clients.test_console_http import Console, start_console

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "clients" / "console"
DATA = CONSOLE / "data" / "gbt2260-2024.txt"
DATA_SHA256 = "4bfd0a05caa1abdf6add54301eebb256156a0044010244ecdb659062cdbc0313"
ORIGIN = "test.example/console-log"
MONTH = "2026-03"
T0 = int(dt.datetime(2026, 3, 10, 10, 0, tzinfo=DEPLOYMENT.zone).timestamp() * 1000)
DIGEST = "3f2a9c1b0d4e"  # `hedui recheck` without --round: the roster's digest
CONNECTORS = [f"bank-{i:02d}" for i in range(1, 81)] + [f"dept-{i}" for i in range(1, 8)]
CAMPAIGN_DOC = "浙民救〔2026〕12号"

# (request id, district, decision or None, error): the month's outcome entries
OUTCOMES: list[tuple[str, str, str | None, str]] = [
    ("intake-1", "330106", "ELIGIBLE", ""),
    ("intake-2", "330106", "INELIGIBLE", ""),
    ("intake-3", "339999", "NEEDS_REVIEW", ""),  # a code the ministry's list does not have
    ("intake-4", "", "ELIGIBLE", ""),  # a household without a district in the register
    (f"recheck-{DIGEST}-1", "330602", "ELIGIBLE", ""),
    (f"recheck-{DIGEST}-2", "330602", "INELIGIBLE", ""),
    ("intake-5", "", None, "consent refused: 1 adult member(s) of the household did not sign"),
    ("intake-6", "", None, "consent refused: 1 adult member(s) of the household did not sign"),
    ("intake-7", "", None, "the ID number is not in the household register"),
    ("intake-8", "", None, "household registry: DEADLINE_EXCEEDED after 5.0 s"),
    (f"recheck-{DIGEST}-3", "", None, "the ID number is not in the household register"),
    # two rounds of one registered campaign (ConsentRecord.campaign): one group, by its number
    ("recheck-spring-1", "330106", "ELIGIBLE", ""),
    ("recheck-autumn-1", "", None, "consent refused: the standing authorisation expired"),
]
REGISTERED = ("recheck-spring-1", "recheck-autumn-1")
BIG = "intake-87"  # a verdict every one of 87 sources answered but one


def _entry(i: int, **body: Any) -> audit_pb2.AuditEntry:
    return audit_pb2.AuditEntry(
        time_unix_ms=T0 + i * 60_000, caller="intake", caller_role="intake", **body
    )


def _consent(request_id: str) -> audit_pb2.ConsentRecord:
    standing = request_id.startswith("recheck-")
    return audit_pb2.ConsentRecord(
        case_number="复核授权 2026-1" if standing else f"case-{request_id}",
        signed_on="2026-03-01",
        form_sha256=hashlib.sha256(request_id.encode()).digest(),
        signer_audit_tokens=[] if standing else [bytes(32)],
        standing=standing,
        campaign=CAMPAIGN_DOC if request_id in REGISTERED else "",
    )


def _log(url: str, key: Ed25519PrivateKey) -> dict[str, int]:
    """Writes the month's entries; the index of each outcome entry by request id."""
    log = AuditLog(LogStore(open_log_engine(url)), origin=ORIGIN, signing_key=key)
    log.append([_entry(0, key_event=audit_pb2.KeyEvent(event="generated", key_name="log"))])
    where: dict[str, int] = {}
    rows = [*OUTCOMES, (BIG, "330782", "ELIGIBLE", "")]
    for n, (request_id, district, decision, error) in enumerate(rows, start=1):
        query = f"q-{n}"
        about = {
            "request_id": request_id,
            "program": "dibao",
            "region": "zhejiang",
            "applicant_audit_token": bytes([n]) * 32,
            "as_of": "2026-03-10",
            "query_id": query,
            "consent": _consent(request_id),
        }
        request = audit_pb2.RequestEntry(**about)  # type: ignore[arg-type]
        if decision is None:
            verdict = audit_pb2.VerdictEntry(error=error, **about)  # type: ignore[arg-type]
        else:
            answered = CONNECTORS if request_id == BIG else CONNECTORS[:3]
            verdict = audit_pb2.VerdictEntry(
                decision=common_pb2.Decision.Value(decision),
                district=district,
                household_size=3,
                policy_version="zhejiang-2026.1",
                connectors_answered=answered[:-1] if request_id == BIG else answered,
                connectors_failed=(
                    [common_pb2.SourceFailure(connector_id=answered[-1], reason="timeout")]
                    if request_id == BIG
                    else []
                ),
                answer_digests=[
                    audit_pb2.AnswerDigest(
                        connector_id=c, digest=hashlib.sha256(c.encode()).digest()
                    )
                    for c in (answered[:-1] if request_id == BIG else answered)
                ],
                rules=[
                    audit_pb2.RuleRecord(id="income", outcome=common_pb2.PASSED, threshold=111_000),
                    audit_pb2.RuleRecord(id="vehicles", outcome=common_pb2.PASSED),
                ],
                figures_commitment=hashlib.sha256(request_id.encode()).digest(),
                **about,  # type: ignore[arg-type]
            )
        receipts = log.append([_entry(2 * n - 1, request=request), _entry(2 * n, verdict=verdict)])
        where[request_id] = receipts[1].leaf_index
    return where


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Console, dict[str, int]]]:
    root = tmp_path_factory.mktemp("console-pages") / "work"
    w = Workdir(root)
    w.service_config.parent.mkdir(parents=True)
    db = root / "audit.sqlite"
    w.service_config.write_text(
        f'[service]\naudit_database = "sqlite:///{db}"\nlog_origin = "{ORIGIN}"\n'
    )
    key = Ed25519PrivateKey.generate()
    pub = w.keys("auditor").root / "log" / "log.pub"
    pub.parent.mkdir(parents=True)
    pub.write_bytes(signing.public_key_to_pem(key.public_key()))
    where = _log(f"sqlite:///{db}", key)
    console = start_console(root)
    console.sign_in()
    yield console, where
    output = console.stop()
    assert "Traceback" not in output, output


def _get(console: Console, path: str) -> str:
    status, _, body = console.request("GET", path)
    assert status == 200, (path, status, body[:500])
    return body


def _cells(body: str, table_id: str) -> list[list[str]]:
    """The rows of the table ``table_id`` as text cells (a small page: no parser needed)."""
    m = re.search(rf'<table id="{table_id}"[^>]*>(.*?)</table>', body, re.S)
    assert m, f"no table #{table_id}"
    rows = re.findall(r"<tr>(.*?)</tr>", m.group(1), re.S)
    return [
        [
            html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
            for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", r, re.S)
        ]
        for r in rows
    ]


def _chart(body: str, canvas_id: str) -> dict[str, Any]:
    m = re.search(rf'<canvas id="{re.escape(canvas_id)}" data-chart="([^"]*)"', body)
    assert m, f"no chart #{canvas_id}"
    return dict(json.loads(html.unescape(m.group(1))))


# -- 1. districts by name, from a named edition ---------------------------------------------


def test_the_district_list_is_the_named_edition_and_names_every_generated_district() -> None:
    from hedui.clients.console.app import DISTRICTS_EDITION, Districts

    assert hashlib.sha256(DATA.read_bytes()).hexdigest() == DATA_SHA256
    note = (CONSOLE / "data" / "README.md").read_text(encoding="utf-8")
    assert "yescallop/areacodes" in note and "CC0" in note and DATA_SHA256 in note
    assert "2024年中华人民共和国县以上行政区划代码" in DISTRICTS_EDITION
    districts = Districts.load()
    assert len(districts.names) == 3213
    # every household district of the synthetic population, and every region of birth but the
    # residence-permit code of Taiwan residents (830000), which GB/T 2260 does not list
    for code in (*REGIONS, *NATIONWIDE):
        if code != "830000":
            assert districts.name(code), code
    assert districts.label("330106") == "330106 杭州市西湖区"
    assert districts.full("330106") == "浙江省 杭州市 西湖区"
    assert districts.label("110105") == "110105 北京市朝阳区"  # a municipality: no city level
    assert districts.label("429004") == "429004 湖北省仙桃市"  # a county under its province
    assert districts.label("330100") == "330100 浙江省杭州市"
    assert districts.label("330000") == "330000 浙江省"
    assert districts.label("330103") == "330103 (unknown code)"  # 下城区, abolished in 2021
    assert districts.label("33010") == "33010 (unknown code)"
    assert districts.label("") == ""


def test_districts_are_shown_by_name_with_the_edition_named(
    written: tuple[Console, dict[str, int]],
) -> None:
    console, _ = written
    body = _get(console, "/log?kind=verdict")
    shown = {row[5] for row in _cells(body, "log")[1:]}
    assert {"330106 杭州市西湖区", "330602 绍兴市越城区", "339999 (unknown code)"} <= shown
    assert "2024年中华人民共和国县以上行政区划代码" in body
    assert 'title="浙江省 杭州市 西湖区"' in body
    # the filter still takes the code
    body = _get(console, "/log?kind=verdict&district=330106")
    assert {row[5] for row in _cells(body, "log")[1:]} == {"330106 杭州市西湖区"}
    bulletin = _get(console, f"/bulletin?month={MONTH}")
    assert "2024年中华人民共和国县以上行政区划代码" in bulletin
    chart = _chart(bulletin, "chart-bulletin")
    assert chart["labels"][:2] == ["330106 杭州市西湖区", "330602 绍兴市越城区"]
    assert chart["codes"][:2] == ["330106", "330602"]


# -- 2. campaigns by their registered document number ---------------------------------------


def _described(kind: str, i: int, **fields: Any) -> tuple[int, dict[str, Any]]:
    return i, {"kind": kind, "time_unix_ms": T0, "caller": "intake", **fields}


def test_campaigns_are_grouped_by_their_document_number() -> None:
    from hedui.clients.console.app import Districts, Stats, campaign_title

    standing = {"case_number": CAMPAIGN_DOC, "standing": True, "campaign": CAMPAIGN_DOC}
    rows = [
        # the request entry names the campaign, its outcome entry (older logs) may not
        _described("verdict", 5, request_id="recheck-a1b2c3d4e5f6-1", query_id="q1",
                   decision="ELIGIBLE", district="330106"),
        _described("request", 4, request_id="recheck-a1b2c3d4e5f6-1", query_id="q1",
                   campaign=CAMPAIGN_DOC),
        # two rounds of one registered campaign, whatever their request ids, are one group
        _described("verdict", 3, request_id="recheck-b0b0b0b0b0b0-1", query_id="q2",
                   decision="INELIGIBLE", district="330106", consent=standing),
        _described("verdict", 2, request_id="recheck-b0b0b0b0b0b0-2", query_id="q2",
                   error="the ID number is not in the household register", consent=standing),
        # a round without a registered campaign: by its roster digest, or the name it was given
        _described("verdict", 1, request_id=f"recheck-{DIGEST}-1", query_id="q3",
                   decision="ELIGIBLE", district="330602"),
        _described("verdict", 0, request_id="recheck-spring-1", query_id="q4",
                   decision="ELIGIBLE", district="330602"),
    ]  # fmt: skip
    stats = Stats.of(iter(rows), DEPLOYMENT)
    groups = stats.groups()
    assert groups[:3] == [("campaign", CAMPAIGN_DOC), ("recheck", DIGEST), ("recheck", "spring")]
    totals = stats.totals(("campaign", CAMPAIGN_DOC))
    assert totals["decided"] == {"ELIGIBLE": 1, "INELIGIBLE": 1, "NEEDS_REVIEW": 0}
    assert totals["refused_total"] == 1 and totals["total"] == 3
    chart = stats.chart(("campaign", CAMPAIGN_DOC), Districts.load())
    assert chart["labels"] == ["330106 杭州市西湖区"]
    assert campaign_title("campaign", CAMPAIGN_DOC) == f"批次 {CAMPAIGN_DOC}"
    assert campaign_title("recheck", "spring") == "复核批次 spring（未登记）"
    digest = campaign_title("recheck", DIGEST)
    assert "未登记" in digest and "名册摘要" in digest and DIGEST[:8] in digest
    assert DIGEST not in digest  # shortened


def test_campaigns_are_shown_by_number_and_a_round_outside_one_by_its_digest_shortened(
    written: tuple[Console, dict[str, int]],
) -> None:
    console, where = written
    body = _get(console, "/campaigns")
    heads = [
        html.unescape(re.sub(r"<[^>]+>", "", h)).split("\n")[0].strip()
        for h in re.findall(r"<h3>(.*?)</h3>", body, re.S)
    ]
    assert heads == [
        f"批次 {CAMPAIGN_DOC}",
        f"复核批次（未登记：名册摘要 {DIGEST[:8]}…）",
        f"{MONTH} 月",
    ], heads
    registered = body[body.index('data-kind="campaign"') :].split("</section>")[0]
    assert f'data-name="{CAMPAIGN_DOC}"' in registered
    assert "核对 2 次" in registered and 'class="refused">1<' in registered
    entry = {
        row[0]: row[1]
        for row in _cells(_get(console, f"/entry/{where['recheck-spring-1']}"), "fields")
    }
    assert entry["授权"].startswith(f"常设授权（批次 {CAMPAIGN_DOC}）")
    section = body[body.index('data-kind="recheck"') :].split("</section>")[0]
    assert "拒绝" in section and ">1<" in section  # its refused request counts in it
    chart = _chart(body, f"chart-campaign-{DIGEST}")
    assert chart["codes"] == ["330602"]


# -- 3. refusals counted, by reason, next to the decided checks ------------------------------


def test_refused_requests_are_counted_by_reason_and_the_totals_add_up(
    written: tuple[Console, dict[str, int]],
) -> None:
    console, _ = written
    decided = sum(1 for _, _, d, _ in OUTCOMES if d) + 1  # and the one with 87 sources
    refused = sum(1 for _, _, d, _ in OUTCOMES if not d)
    body = _get(console, f"/bulletin?month={MONTH}")

    def number(name: str) -> int:
        m = re.search(rf'<b id="{name}">(\d+)</b>', body)
        assert m, name
        return int(m.group(1))

    assert (number("verdicts"), number("refused"), number("outcomes")) == (
        decided,
        refused,
        decided + refused,
    )
    reasons = {row[0]: int(row[1]) for row in _cells(body, "refusals")[1:-1]}
    assert reasons == {
        "授权不符（成年成员未签、授权过期或案号已用）": 3,
        "不在户籍登记中": 2,
        "户籍登记系统未答复或拒绝": 1,
    }
    assert _cells(body, "refusals")[-1] == ["合计", str(refused)]
    # the log says which were refused, and why
    log = _get(console, "/log?kind=verdict")
    assert "拒绝 · 不在户籍登记中：the ID number is not in the household register" in log


# -- 4. an entry as a table, its sources folded ----------------------------------------------


def test_an_entry_is_a_table_with_its_sources_and_raw_json_folded(
    written: tuple[Console, dict[str, int]],
) -> None:
    console, where = written
    body = _get(console, f"/entry/{where[BIG]}")
    fields = {row[0]: row[1] for row in _cells(body, "fields")}
    assert fields["类型"] == "verdict 核对结果"
    assert fields["调用方"] == "intake（intake）"
    assert fields["结论"] == "ELIGIBLE 准予"
    assert fields["区县"] == "330782 金华市义乌市"
    assert fields["请求号"] == BIG and fields["家庭人数"] == "3"
    assert fields["时间"].startswith("2026-03-10 ")
    assert _cells(body, "rules")[1:] == [
        ["income", "PASSED 符合", "111000"],
        ["vehicles", "PASSED 符合", "—"],
    ]
    assert _cells(body, "failed")[1:] == [[CONNECTORS[-1], "timeout"]]
    # the 86 sources answered and their digests only inside the folded <details>, closed
    folded = re.search(r'<details id="connectors">(.*?)</details>', body, re.S)
    assert folded and "已答复的数据来源 86 个" in folded.group(1)
    # the raw JSON last, folded too, and nowhere else
    raw = re.search(r'<details id="raw">(.*?)</details>', body, re.S)
    assert raw and '"connectors_answered"' in html.unescape(raw.group(1))
    outside = body.replace(folded.group(0), "").replace(raw.group(0), "")
    assert "bank-01" not in outside and "dept-6" not in outside
    assert body.index('<details id="raw">') > body.index('<table id="fields"')
    assert "<pre>" not in body.replace(raw.group(0), "")
    # a refusal's page says it was refused and why
    refused = {
        row[0]: row[1] for row in _cells(_get(console, f"/entry/{where['intake-7']}"), "fields")
    }
    assert refused["结论"] == "拒绝：不在户籍登记中"
    assert refused["拒绝原因（原文）"] == "the ID number is not in the household register"
    assert "区县" not in refused


# -- 5. charts the width of the page; no row of zeros ----------------------------------------


def test_no_row_of_zeros_and_a_decided_check_without_district_is_labelled(
    written: tuple[Console, dict[str, int]],
) -> None:
    console, _ = written
    body = _get(console, f"/bulletin?month={MONTH}")
    rows = _cells(body, "districts")[1:]
    assert rows == [
        ["330106 杭州市西湖区", "2", "1", "0"],
        ["330602 绍兴市越城区", "1", "1", "0"],
        ["330782 金华市义乌市", "1", "0", "0"],
        ["339999 (unknown code)", "0", "0", "1"],
        ["未知区划", "1", "0", "0"],
    ]
    for page in (body, _get(console, "/campaigns")):
        for canvas in re.findall(r'<canvas id="([^"]+)"', page):
            chart = _chart(page, canvas)
            assert "—" not in chart["labels"], canvas
            for i in range(len(chart["labels"])):
                assert sum(s["data"][i] for s in chart["series"]) > 0, (canvas, chart["labels"][i])


def test_charts_are_not_held_to_part_of_the_page() -> None:
    """The browser test (tests/e2e/test_console.py) measures it; here the style that did it."""
    from hedui.clients.console import app

    css = (app.HERE / "static" / "console.css").read_text(encoding="utf-8")
    rules = dict(re.findall(r"^([^{}@/\n][^{}]*?)\s*\{([^}]*)\}", css, re.M))
    assert "max-width" not in rules[".chart"] and "width: 100%" in rules[".chart"]
    assert "max-width" not in rules["main"]


def test_the_data_file_is_packaged() -> None:
    """An installed console (a wheel, not this tree) has its district list too."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    data = project["tool"]["setuptools"]["package-data"]["hedui.clients.console"]
    assert "data/*" in data

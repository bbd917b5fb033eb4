"""Issue #14 item 1: the 核对报告 of any verdict, through `hedui report` and the gRPC method.

The expectations come from the population's threshold households (one decision each) and from
the verdict the intake got, not from the report's own code."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zlib
from pathlib import Path

import grpc
import pytest

from hedui.audit import commitment
from hedui.proto.v1 import audit_pb2, verification_pb2
from tests.e2e.conftest import Up, grpc_code

CASES = {
    "income_below_line": ("ELIGIBLE", "准予", "Eligible"),
    "income_at_line": ("INELIGIBLE", "不予", "Not eligible"),
    "income_sources_disagree": ("NEEDS_REVIEW", "需人工复核", "Needs review"),
}


def _verify(up: Up, label: str, request_id: str) -> dict:
    household = dict(up.summary.thresholds)[label]
    head = dict(up.summary.applicants)[household]
    r = up.cli(
        "verify", "--workdir", str(up.workdir.root), "--id", head, "--program", "dibao",
        "--request-id", request_id, "--caseworker", "li.na", "--json", *up.consent_args(head),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    verdict: dict = json.loads(r.stdout)
    verdict["household"] = household
    return verdict


@pytest.mark.parametrize("label", sorted(CASES))
def test_a_caseworker_prints_the_report_of_any_verdict(up: Up, tmp_path: Path, label: str) -> None:
    decision, zh, en = CASES[label]
    request_id = f"report-{label}"
    verdict = _verify(up, label, request_id)
    assert verdict["decision"] == decision
    out = tmp_path / "report.html"
    r = up.cli(
        "report", "--workdir", str(up.workdir.root), "--request-id", request_id,
        "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    html = out.read_text(encoding="utf-8")
    assert "家庭经济状况核对报告" in html and f'class="decision {decision}"' in html
    assert f">{zh}" in html
    leaf = verdict["audit"]["leaf_index"]
    assert f"hedui audit prove {leaf}" in html and "<svg" in html  # the receipt's QR code
    assert "已验证" in html  # the service proved its own entry under the receipt's checkpoint
    assert "li.na" in html and "intake" in html
    case = up.consent(dict(up.summary.applicants)[verdict["household"]]).case_number
    assert case in html
    # every member by relation, the applicant masked; no member's full ID number anywhere
    ids = up.summary.members[verdict["household"]]
    assert all(i not in html for i in ids)
    head = dict(up.summary.applicants)[verdict["household"]]
    assert f"{head[:3]}{'*' * 14}{head[17]}" in html
    assert html.count("<td>户主") + html.count("<td>配偶") + html.count("<td>子女") >= 1
    assert len(re.findall(r"<tr>\s*<td>(户主|配偶|子女|父母|孙子女|兄弟姐妹|其他)", html)) == len(
        ids
    )
    # self-contained: nothing is fetched when it is opened or printed
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    if decision == "ELIGIBLE":
        fen = verdict["benefit_fen"]
        assert fen > 0 and f"{fen // 100:,}.{fen % 100:02d} 元" in html
    r = up.cli(
        "report", "--workdir", str(up.workdir.root), "--request-id", request_id,
        "--lang", "en", "--out", str(tmp_path / "en.html"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    en_html = (tmp_path / "en.html").read_text(encoding="utf-8")
    assert "Household Economic Status Verification Report" in en_html and f">{en}" in en_html


def test_the_pdf_is_a4_and_the_report_carries_the_verdict_it_was_made_from(
    up: Up, tmp_path: Path
) -> None:
    verdict = _verify(up, "income_below_line", "report-pdf")
    out = tmp_path / "report.pdf"
    r = up.cli(
        "report", "--workdir", str(up.workdir.root), "--request-id", "report-pdf",
        "--format", "pdf", "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    pdf = out.read_bytes()
    assert pdf.startswith(b"%PDF-")
    boxes = re.findall(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)", _inflated(pdf))
    assert boxes and all(round(float(w)) == 595 and round(float(h)) == 842 for w, h in boxes)
    # the gRPC method gives the same verdict, whose figures open the logged commitment
    reply = up.stub().GetReport(verification_pb2.ReportRequest(request_id="report-pdf"))
    assert reply.media_type.startswith("text/html") and reply.filename == "report-report-pdf.html"
    assert reply.verdict.audit.leaf_index == verdict["audit"]["leaf_index"]
    entry = _entry(up, reply.verdict.audit.leaf_index)
    assert commitment.opens(entry.verdict.figures_commitment, reply.verdict)


def _inflated(pdf: bytes) -> bytes:
    """The PDF with its compressed streams inflated (the page dictionaries are in them)."""
    out = [pdf]
    for m in re.finditer(rb"stream\r?\n(.*?)endstream", pdf, re.S):
        try:
            out.append(zlib.decompress(m.group(1)))
        except zlib.error:
            pass
    return b"\n".join(out)


def _entry(up: Up, index: int) -> audit_pb2.AuditEntry:
    from hedui.core.rpc import open_channel
    from hedui.proto.v1 import audit_pb2_grpc

    stub = audit_pb2_grpc.AuditServiceStub(
        open_channel(up.address, tls=up.workdir.tls("auditor"), server_name="service")
    )
    got = stub.GetEntries(audit_pb2.GetEntriesRequest(start=index, end=index + 1))
    return audit_pb2.AuditEntry.FromString(got.entries[0].entry)


def test_a_report_is_only_for_the_intake_that_made_the_request(up: Up, tmp_path: Path) -> None:
    _verify(up, "income_at_line", "report-mine")
    r = up.cli(
        "report", "--workdir", str(up.workdir.root), "--request-id", "no-such-request",
        "--out", str(tmp_path / "x.html"),
    )  # fmt: skip
    assert r.returncode == 1
    assert "NOT_FOUND" in r.stderr and "no-such-request" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "x.html").exists()
    work = str(up.workdir.root)
    r = up.cli("keys", "issue", "--workdir", work, "--name", "intake-report", "--role", "intake")
    assert r.returncode == 0, r.stderr
    r = up.cli(
        "report", "--workdir", work, "--request-id", "report-mine",
        "--profile", str(up.workdir.root / "intake-report.toml"), "--out", str(tmp_path / "y.html"),
    )  # fmt: skip
    assert r.returncode == 1 and "NOT_FOUND" in r.stderr
    for bad, field in ((verification_pb2.ReportRequest(), "request_id"),
                       (verification_pb2.ReportRequest(request_id="report-mine", lang="fr"), "lang")):  # fmt: skip
        with pytest.raises(grpc.RpcError) as e:
            up.stub().GetReport(bad)
        assert grpc_code(e.value) == grpc.StatusCode.INVALID_ARGUMENT and field in str(e.value)
    # an auditor's certificate may not ask for reports
    with pytest.raises(grpc.RpcError) as e:
        up.stub("auditor").GetReport(verification_pb2.ReportRequest(request_id="report-mine"))
    assert grpc_code(e.value) == grpc.StatusCode.PERMISSION_DENIED


def test_without_out_the_report_is_named_by_the_client_and_never_replaced_unasked(
    up: Up, tmp_path: Path
) -> None:
    """Issue #24 item 3: the name is `report-<request id>.html`, made by the CLI, in the current
    folder; a second run refuses to replace it (before asking the service) unless `--force`."""
    _verify(up, "income_below_line", "report-name")
    args = [sys.executable, "-m", "hedui.clients.cli", "report",
            "--workdir", str(up.workdir.root), "--request-id", "report-name"]  # fmt: skip

    def report(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*args, *extra], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
        )

    r = report()
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "report-report-name.html"
    assert [p.name for p in tmp_path.iterdir()] == ["report-report-name.html"]
    out = tmp_path / "report-report-name.html"
    assert "家庭经济状况核对报告" in out.read_text(encoding="utf-8")
    out.write_text("annotated by hand\n", encoding="utf-8")
    r = report()
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "report-report-name.html exists; give --force to replace it" in r.stderr
    assert out.read_text(encoding="utf-8") == "annotated by hand\n"
    r = report("--force")
    assert r.returncode == 0, r.stderr
    assert "家庭经济状况核对报告" in out.read_text(encoding="utf-8")

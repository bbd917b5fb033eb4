"""The 核对报告: the printable report of one verification, for the caseworker's file.

Made by the service from what it already holds: the verdict kept for the request (by the caller
that made it), the verdict's entry in the audit log (caseworker, intake system, consent record,
which sources answered), and the signed checkpoint the entry is proven under. A4, in Chinese or
English, self-contained HTML (styles and the receipt's QR code inline, nothing fetched) or PDF
through WeasyPrint. It names sources, never a figure of one source: the figures shown are the
household's totals the rules compared, as in the verdict.
"""

from __future__ import annotations

import base64
import datetime as dt
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

import jinja2
import segno

from hedui.audit import commitment
from hedui.audit.checkpoint import Checkpoint
from hedui.core.clock import Clock
from hedui.core.deployment import BANK, ConnectorKind, kind_of
from hedui.proto.v1 import audit_pb2, common_pb2, connector_pb2, verification_pb2
from hedui.server.errors import ServiceError
from hedui.server.policy import engine
from hedui.server.policy.book import PROGRAMS

LANGS = ("zh", "en")


class ReportError(ServiceError):
    """A report that cannot be made; the message says why and what to do."""


class ReportNotFound(ReportError):
    """No verification of this caller has the request id."""


class ReportNotReady(ReportError):
    """The request is still being verified."""


class PdfUnavailable(ReportError):
    """This host cannot render PDF (no WeasyPrint, or no CJK font)."""


@dataclass(frozen=True)
class ReportSource:
    """What a report is made from: the kept verdict, its audit entry and index, the signed
    checkpoint (note and parsed) that entry is proven under, and whether the proof held."""

    verdict: verification_pb2.Verdict
    entry: audit_pb2.AuditEntry
    leaf_index: int
    note: bytes
    checkpoint: Checkpoint
    proven: bool


_DECISIONS = {
    "zh": {"ELIGIBLE": "准予", "INELIGIBLE": "不予", "NEEDS_REVIEW": "需人工复核"},
    "en": {"ELIGIBLE": "Eligible", "INELIGIBLE": "Not eligible", "NEEDS_REVIEW": "Needs review"},
}
_OUTCOMES = {
    "zh": {"PASSED": "符合", "FAILED": "不符合", "UNDECIDED": "无法判定"},
    "en": {"PASSED": "met", "FAILED": "not met", "UNDECIDED": "undecided"},
}
_RELATIONS = {
    "zh": {
        "HEAD": "户主",
        "SPOUSE": "配偶",
        "CHILD": "子女",
        "PARENT": "父母",
        "GRANDCHILD": "孙子女",
        "SIBLING": "兄弟姐妹",
        "OTHER": "其他",
    },
    "en": {
        "HEAD": "head",
        "SPOUSE": "spouse",
        "CHILD": "child",
        "PARENT": "parent",
        "GRANDCHILD": "grandchild",
        "SIBLING": "sibling",
        "OTHER": "other",
    },
}
_COMPARISONS = {"<": "<", "<=": "≤", "==": "=", ">=": "≥"}
# a figure cell without its figure says why (a rule's value or threshold is absent from the
# verdict for one of these reasons), and the report explains each mark it uses under the table
_NOT_SHOWN = {
    "zh": {"withheld": "不予披露", "unavailable": "未取得", "removed": "已删除"},
    "en": {"withheld": "withheld", "unavailable": "not available", "removed": "removed"},
}
_NOT_SHOWN_LEGEND = {
    "zh": {
        "withheld": "该数值已取得，按信息披露规则不在报告中列示（不披露单一部门的数值）",
        "unavailable": "有数据来源未答复或答复无效，该数值无法计算，规则无法判定",
        "removed": "该数值已按保存期限删除",
    },
    "en": {
        "withheld": "the figure was obtained but the disclosure policy keeps it out of the "
        "report (no single department's figure is disclosed)",
        "unavailable": "a source did not answer, or its answer was invalid: the figure could "
        "not be computed and the rule is undecided",
        "removed": "the figure was removed after the retention period",
    },
}


yuan = partial(engine.yuan, grouped=True)  # 1,234.56: integer fen as printed yuan


def _amount(value: int | None, unit: str, lang: str) -> str:
    if value is None:
        return "—"
    if unit == "fen":
        return f"{yuan(value)} 元" if lang == "zh" else f"¥{yuan(value)}"
    return str(value)


def _kind(connector_id: str) -> ConnectorKind | None:
    try:
        return kind_of(connector_id)
    except KeyError:
        return None


def source_name(connector_id: str, lang: str) -> str:
    """A connector for a person: a department by its name, a bank as 银行 bank-NN."""
    kind = _kind(connector_id)
    if kind is None:
        return connector_id
    zh, _, en = kind.display_name.partition(" ")
    if kind is BANK:
        return f"{zh if lang == 'zh' else en} {connector_id}"
    return zh if lang == "zh" else en


def receipt_text(source: ReportSource) -> str:
    """What the QR code holds: the command that checks the receipt, the request id and the
    signed checkpoint itself, so the receipt can be checked without this report."""
    return (
        f"hedui audit prove {source.leaf_index}\n"
        f"request {source.verdict.request_id}\n" + source.note.decode("utf-8", "replace")
    )


def qr_svg(text: str) -> str:
    return str(segno.make(text, error="m").svg_inline(scale=2, border=2))


def context(source: ReportSource, lang: str, clock: Clock, made_at: dt.datetime) -> dict[str, Any]:
    """The template's facts, every one already in words for ``lang``."""
    if lang not in LANGS:
        raise ReportError(f"unknown report language {lang!r}; use zh or en")
    v, e = source.verdict, source.entry
    ve = e.verdict
    program = PROGRAMS.get(v.program)
    decision = common_pb2.Decision.Name(v.decision)
    purged = bool(v.decision) and not v.figures_opening
    rules = []
    marks: dict[str, None] = {}  # the "not shown" marks used, in order
    for r in v.rules:
        unit = r.unit or "fen"
        # an absent figure: removed by retention, not computed for want of a source, or withheld
        # by the disclosure policy (a decided figure the verdict leaves out)
        absent = "removed" if purged else "unavailable" if r.missing_sources else "withheld"
        cells = {}
        for name in ("value", "threshold"):
            if r.HasField(name):
                cells[name], cells[f"{name}_absent"] = _amount(getattr(r, name), unit, lang), ""
            else:
                cells[name], cells[f"{name}_absent"] = _NOT_SHOWN[lang][absent], absent
                marks[absent] = None
        rules.append(
            {
                "title": (r.title_zh if lang == "zh" else r.title_en) or r.id,
                "id": r.id,
                **cells,
                "comparison": _COMPARISONS.get(r.comparison, r.comparison),
                "outcome": _OUTCOMES[lang].get(common_pb2.Outcome.Name(r.outcome), "?"),
                "outcome_class": common_pb2.Outcome.Name(r.outcome).lower(),
                "message": r.message_zh if lang == "zh" else r.message_en,
                "references": list(r.references),
                "missing": [source_name(c, lang) for c in r.missing_sources],
            }
        )
    answered = list(ve.connectors_answered)
    banks = [c for c in answered if _kind(c) is BANK]
    departments = [source_name(c, lang) for c in answered if c not in banks]
    consent = ve.consent
    return {
        "lang": lang,
        "request_id": v.request_id,
        "program": (program.title_zh if lang == "zh" else program.title_en)
        if program
        else v.program,
        "program_id": v.program,
        "region": v.region,
        "as_of": v.as_of,
        "policy_version": v.policy_version,
        "decision": decision,
        "decision_text": _DECISIONS[lang].get(decision, decision),
        "benefit": None
        if decision != "ELIGIBLE" or purged
        else _amount(v.benefit_fen, "fen", lang),
        "purged": purged,
        "household_size": v.household_size,
        "members": [
            {
                "relation": _RELATIONS[lang].get(connector_pb2.Relation.Name(m.relation), "?"),
                "birth_year": m.birth_year or "—",
                "applicant": m.applicant,
                "signed": m.signed,
                "masked_id": m.masked_id,
            }
            for m in v.members
        ],
        "rules": rules,
        "not_shown": [(_NOT_SHOWN[lang][m], _NOT_SHOWN_LEGEND[lang][m]) for m in marks],
        "departments": departments,
        "banks": banks,
        "answered": len(answered),
        "failures": [
            {"name": source_name(f.connector_id, lang), "reason": f.reason} for f in v.failures
        ],
        "caseworker": ve.caseworker_id,
        "intake": e.caller,
        "consent": {
            "case_number": consent.case_number or ve.consent_reference,
            "signed_on": consent.signed_on,
            "form_sha256": consent.form_sha256.hex(),
            "signers": len(consent.signer_audit_tokens),
            "standing": consent.standing,
        },
        "decided_at": clock.show(e.time_unix_ms),
        "made_at": clock.show(int(made_at.timestamp() * 1000)),
        "leaf_index": source.leaf_index,
        "tree_size": source.checkpoint.size,
        "origin": source.checkpoint.origin,
        "root_b64": base64.b64encode(source.checkpoint.root).decode(),
        "proven": source.proven,
        "committed": bool(ve.figures_commitment)
        and not purged
        and commitment.opens(ve.figures_commitment, v),
        "qr": qr_svg(receipt_text(source)),
    }


@cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("hedui.server", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(source: ReportSource, lang: str, clock: Clock, made_at: dt.datetime) -> str:
    return _templates().get_template("report.html").render(**context(source, lang, clock, made_at))


def render_pdf(html: str) -> bytes:
    """The HTML printed to A4 PDF by WeasyPrint, with the host's CJK font."""
    try:
        import weasyprint  # type: ignore[import-untyped]
    except (ImportError, OSError) as e:
        raise PdfUnavailable(
            f"PDF needs WeasyPrint and Pango on the service's host ({e}); install "
            "hedui[pdf] there, or ask for HTML and print it from a browser"
        ) from None
    if not has_cjk_font():
        raise PdfUnavailable(
            "no Chinese font on the service's host (fontconfig finds none for zh): install one "
            "(Debian: apt-get install fonts-wqy-microhei), or ask for HTML"
        )
    return bytes(weasyprint.HTML(string=html).write_pdf())


@cache
def has_cjk_font() -> bool:
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return False
    out = subprocess.run(
        [fc_list, ":lang=zh", "family"], capture_output=True, text=True, check=False
    )
    return bool(out.stdout.strip())

"""The 核对报告: the printable report of one verification, for the caseworker's file.

Made by the service from what it already holds: the verdict kept for the request (by the caller
that made it), the verdict's entry in the audit log (caseworker, intake system, consent record,
which sources answered), and the signed checkpoint the entry is proven under. A4, in Chinese or
English, self-contained HTML (styles, the receipt's QR code and a subset of a freely licensed
Chinese font with the glyphs the report uses inline, nothing fetched: it reads the same on a
computer without any Chinese font) or PDF through WeasyPrint. It names sources, never a figure of one source: the figures shown are the
household's totals the rules compared, as in the verdict.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import logging
import shutil
import subprocess
import unicodedata
from dataclasses import dataclass
from functools import cache, lru_cache, partial
from pathlib import Path
from typing import Any

import jinja2
import segno

from hedui.audit import commitment
from hedui.audit.checkpoint import Checkpoint
from hedui.core.clock import Clock
from hedui.core.deployment import BANK, ConnectorKind, kind_of
from hedui.core.policy import engine
from hedui.core.policy.book import PROGRAMS
from hedui.proto.v1 import audit_pb2, common_pb2, connector_pb2, verification_pb2
from hedui.server.errors import ServiceError

LANGS = ("zh", "en")
log = logging.getLogger("hedui.server")


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
        else ("已密封交付支付系统" if lang == "zh" else "sealed for the payment system")
        if v.sealed_benefit
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
    """The report as one HTML file; its style sheet carries the glyphs of every Chinese
    character it uses (see ``font_face``), so it needs no font on the reader's computer."""
    template, facts = (
        _templates().get_template("report.html"),
        context(source, lang, clock, made_at),
    )
    html = template.render(**facts, font_face="")
    face = font_face(html)
    return template.render(**facts, font_face=face) if face else html


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


# -- the embedded font ----------------------------------------------------------------------
# A reader's computer may have no Chinese font at all (every character a box), so the HTML
# carries the glyphs it uses: a subset of a freely licensed CJK font found on the service's host,
# in an @font-face data: URL first in the report's font stack. Characters it lacks, and Latin
# text (not in the subset), fall through to the common desktop fonts after it in the stack.

FONT_FAMILY = "hedui report CJK"  # the embedded subset's name in the report's CSS
# fonts whose licence lets a document carry a subset of them, best first (fontconfig's family
# name); never a host's other fonts (Microsoft YaHei, PingFang: not redistributable)
EMBEDDABLE_FONTS = (
    "WenQuanYi Micro Hei",  # Apache-2.0 or GPL-3+ with font exception (fonts-wqy-microhei)
    "Noto Sans CJK SC",  # SIL OFL 1.1 (fonts-noto-cjk)
    "Source Han Sans SC",  # SIL OFL 1.1
    "WenQuanYi Zen Hei",  # GPL-2+ with font exception (fonts-wqy-zenhei)
    "Droid Sans Fallback",  # Apache-2.0 (fonts-droid-fallback)
)
# where Debian puts the first of them, for a host without fontconfig's fc-list
_KNOWN_FONT_FILES = ((Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"), 0),)
_REGULAR = 80  # fontconfig's weight of a regular face
# the name records the subset keeps: copyright (0), names (1-6), licence and its URL (13, 14)
_NAME_IDS = [0, 1, 2, 3, 4, 5, 6, 13, 14]


def report_characters(html: str) -> str:
    """The characters of ``html`` a Latin font lacks (East Asian wide and fullwidth: hanzi,
    Chinese punctuation), sorted, each once."""
    return "".join(sorted({c for c in html if unicodedata.east_asian_width(c) in "WF"}))


@cache
def embeddable_font() -> tuple[Path, int] | None:
    """The font file (and face index in a collection) a report embeds a subset of: the best of
    ``EMBEDDABLE_FONTS`` that fontconfig lists for Chinese, else a known path. None (and one
    WARNING) if the host has none: the report then relies on the reader's fonts."""
    candidates: list[tuple[int, int, Path, int]] = []
    fc_list = shutil.which("fc-list")
    if fc_list is not None:
        out = subprocess.run(
            [fc_list, "--format", "%{file}\t%{index}\t%{weight}\t%{family}\n", ":lang=zh"],
            capture_output=True,
            text=True,
            check=False,
        )
        for line in out.stdout.splitlines():
            file, index, weight, families = [*line.split("\t"), "", "", ""][:4]
            names = families.split(",")
            rank = next((i for i, f in enumerate(EMBEDDABLE_FONTS) if f in names), None)
            if rank is None or not index.isdigit():
                continue
            w = int(weight) if weight.isdigit() else _REGULAR
            candidates.append((rank, abs(w - _REGULAR), Path(file), int(index)))
    found = [(path, index) for *_, path, index in sorted(candidates)]
    found += [(path, index) for path, index in _KNOWN_FONT_FILES if path.is_file()]
    if found:
        return found[0]
    log.warning(
        "no freely licensed Chinese font on the service's host (%s): 核对报告 in HTML carry no "
        "font and show boxes on a computer without a Chinese font; install one (Debian: "
        "apt-get install fonts-wqy-microhei)",
        ", ".join(EMBEDDABLE_FONTS),
    )
    return None


def font_face(html: str) -> str:
    """The ``@font-face`` rule that carries the glyphs of every character of ``html`` a Latin
    font lacks, as a data: URL; "" if it has none or the host has no font to take them from."""
    chars = report_characters(html)
    font = embeddable_font() if chars else None
    if font is None:
        return ""
    subset = _font_subset(*font, chars)
    if subset is None:
        return ""
    data, media, css_format, notice = subset
    return (
        f"/* {notice} */\n"
        f'@font-face {{ font-family: "{FONT_FAMILY}"; '
        f"src: url(data:{media};base64,{base64.b64encode(data).decode()}) "
        f'format("{css_format}"); }}'
    )


@lru_cache(maxsize=64)  # reports of one programme use much the same characters
def _font_subset(path: Path, index: int, chars: str) -> tuple[bytes, str, str, str] | None:
    """The glyphs of ``chars`` in the font at ``path``: its bytes (WOFF2 if brotli is there,
    else WOFF), media type, CSS format and a notice naming the font and its licence."""
    try:
        from fontTools import subset  # type: ignore[import-untyped]
        from fontTools.ttLib import TTFont  # type: ignore[import-untyped]
    except ImportError as e:
        _warn_once(f"the report's font cannot be subset without fontTools ({e})")
        return None
    try:
        import brotli  # type: ignore[import-untyped]  # noqa: F401  (fontTools' WOFF2)

        flavor, media = "woff2", "font/woff2"
    except ImportError:
        flavor, media = "woff", "font/woff"
    options = subset.Options()
    options.flavor = flavor
    options.hinting = True  # drawn as the installed font is (2 KB more than without)
    options.name_IDs = _NAME_IDS
    options.notdef_outline = True  # a character no font has shows as a box, not as nothing
    options.drop_tables += ["FFTM", "vhea", "vmtx"]  # no vertical text in a report
    try:
        with TTFont(path, fontNumber=index, lazy=True) as font:
            name = font["name"]
            notice = "; ".join(
                str(r) for i in (4, 5, 0, 13, 14) if (r := name.getName(i, 3, 1, 0x409)) is not None
            )
            subsetter = subset.Subsetter(options)
            subsetter.populate(text=chars)
            subsetter.subset(font)
            out = io.BytesIO()
            font.flavor = flavor
            font.save(out)
    except Exception as e:  # a damaged or unreadable font file: the report goes without
        _warn_once(f"the report's font {path} cannot be subset ({type(e).__name__}: {e})")
        return None
    notice = f"{notice}; subset to the {len(chars)} characters of this report"
    for unsafe in ("*/", "<", ">"):  # the notice goes in a CSS comment inside <style>
        notice = notice.replace(unsafe, "")
    return out.getvalue(), media, flavor, " ".join(notice.split())


@cache
def _warn_once(problem: str) -> None:
    log.warning("%s: 核对报告 in HTML carry no font and show boxes without a Chinese font", problem)

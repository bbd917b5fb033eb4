"""``hedui console``: the auditor's and supervisor's web console.

A small Starlette app that reads the audit log the way ``hedui audit`` does (over the
AuditService with the auditor certificate of the workdir, or from the log's database when the
deployment is down) and shows it to a browser on this host:

- the log page by page, filtered by kind, caller, district and date, and one entry in detail;
- a search by person, which goes through the service and is itself logged;
- checks in the page: the browser fetches the signed checkpoint, entries and proofs as bytes
  and checks them with its own JavaScript (static/verify.js); the server gives no verdict on
  them, and the log's public key comes from the auditor's own key directory;
- the witnesses' cosignatures (c2sp.org/tlog-cosignature, issue #23) of every checkpoint a page
  shows or the browser proves against, checked here as ``hedui audit verify`` checks them, with
  the witnesses' verifier keys pinned as it pins them (the auditor's ``witness/witness.vkey``):
  green only when cosigned; a checkpoint not cosigned, or whose cosignature does not verify, is
  said so in red and not handed to the browser's checks (409), which then fail; with no witness
  pinned the pages say the cosignatures were not checked;
- decisions by district per re-verification campaign and per month, alerts raised, closed in
  time and overdue, and a printable monthly bulletin (通报);
- districts by their GB/T 2260 names (the Ministry of Civil Affairs' list of the year named in
  ``DISTRICTS_EDITION``, vendored in ``data/``), campaigns by their registered document number,
  and refused checks counted by reason next to the decided ones.

Anyone reaching it must present the access token printed at start (as Jupyter does); it is
exchanged for a session cookie (HttpOnly, SameSite=Strict) and never written to a log. A
request that changes state (a POST) must come from the console's own pages: its ``Origin`` is
the console's own (``null`` never is), or, without one, ``Sec-Fetch-Site`` says so. Every
response carries a Content-Security-Policy that runs only the console's own script files (no
inline script, handler or style), and every index, size or page number a request names is a
whole number within bounds, or the answer is 400 naming the parameter.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import re
import secrets
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from hedui.audit.auditor import NotCosigned, TamperingDetected, check_cosigned, describe_entry
from hedui.audit.checkpoint import parse_and_verify, vkey
from hedui.audit.cosignature import WitnessPolicy
from hedui.audit.errors import VerificationError
from hedui.audit.log import key_name
from hedui.clients.auditor import AuditorSession, search
from hedui.clients.errors import ClientError
from hedui.clients.intake import DECISION_ZH
from hedui.clients.recheck import campaign_of
from hedui.core.clock import DEPLOYMENT, Clock
from hedui.core.errors import HeduiError
from hedui.proto.v1 import audit_pb2

HERE = Path(__file__).resolve().parent
log = logging.getLogger("hedui.console")
COOKIE = "hedui_console"
MAX_ENTRIES = 1000  # per /api/entries call, as the AuditService pages
MAX_INDEX = 10**12  # the largest index, size or page number a request may name
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# on every response: only this console's own files run, nothing frames it, no inline style
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # no Referer to any other site; not "no-referrer", under which a browser sends its own
    # forms with ``Origin: null``, which is refused
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
# the kinds of entry (the body's field name in AuditEntry, as describe_entry gives it)
KINDS = ("request", "verdict", "search", "alert", "monitoring", "key_event", "config_change")
DECISIONS = ("ELIGIBLE", "INELIGIBLE", "NEEDS_REVIEW")

# -- districts: GB/T 2260 codes by name ---------------------------------------------------

# the Ministry of Civil Affairs' list of county-level and higher codes at the end of 2024, taken
# unchanged from the CC0 collection yescallop/areacodes (data/README.md: source, checksum, update)
DISTRICTS_FILE = HERE / "data" / "gbt2260-2024.txt"
DISTRICTS_EDITION = "民政部《2024年中华人民共和国县以上行政区划代码》（GB/T 2260，截至 2024-12-31）"
UNKNOWN_CODE = "(unknown code)"
NO_DISTRICT = "未知区划"  # a decided check whose household had no district in the register
_CODE = re.compile(r"[0-9]{6}")


@dataclass(frozen=True)
class Districts:
    """District names by GB/T 2260 code, from one year's list of the Ministry of Civil Affairs."""

    names: Mapping[str, str]
    edition: str = DISTRICTS_EDITION

    @classmethod
    def load(cls, path: Path = DISTRICTS_FILE, edition: str = DISTRICTS_EDITION) -> Districts:
        """The list at ``path``: one ``code name`` a line."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ClientError(
                f"the console's list of district names {path} cannot be read ({e}); "
                "reinstall hedui (the file is part of the package)"
            ) from None
        names = {}
        for line in text.splitlines():
            code, _, name = line.strip().partition(" ")
            if _CODE.fullmatch(code) and name.strip():
                names[code] = name.strip()
        return cls(names, edition)

    def levels(self, code: str) -> list[str]:
        """Province, city (where there is one) and county of a known code; [] for another."""
        if not _CODE.fullmatch(code) or code not in self.names:
            return []
        province, city = code[:2] + "0000", code[:4] + "00"
        found = [province] + ([city] if city != province else []) + [code]
        return [self.names[c] for c in dict.fromkeys(found) if c in self.names]

    def name(self, code: str) -> str:
        """``杭州市西湖区``: a county by its city (its province where it has none), a city by its
        province, a province alone; "" for a code not in the list."""
        levels = self.levels(code)
        return "".join(levels[-2:]) if len(levels) > 1 else "".join(levels)

    def label(self, code: str) -> str:
        """``330106 杭州市西湖区``; ``339999 (unknown code)``; "" for no code."""
        if not code:
            return ""
        name = self.name(code)
        return f"{code} {name}" if name else f"{code} {UNKNOWN_CODE}"

    def full(self, code: str) -> str:
        """``浙江省 杭州市 西湖区`` (a cell's tooltip); "" for a code not in the list."""
        return " ".join(self.levels(code))


# -- re-verification campaigns ------------------------------------------------------------

_DIGEST = re.compile(r"[0-9a-f]{12}")  # `hedui recheck` without --round: the roster's digest


def registered_campaign(d: Mapping[str, Any]) -> str:
    """The document number of the registered campaign an entry was made under (its consent's
    ``campaign``, or the entry's own), or "" for none."""
    consent = d.get("consent")
    for value in (
        d.get("campaign"),
        consent.get("campaign") if isinstance(consent, dict) else None,
    ):
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def campaign_title(kind: str, name: str) -> str:
    """How a campaign's group is headed: by its document number when registered (a
    re-verification or a monitoring campaign: the number says which), else, for a round of
    ``hedui recheck`` outside any registered campaign, by the name it was given or the roster's
    digest, shortened and labelled."""
    if kind == "campaign":
        return f"批次 {name}"
    if _DIGEST.fullmatch(name):
        return f"复核批次（未登记：名册摘要 {name[:8]}…）"
    return f"复核批次 {name}（未登记）"


def _slug(name: str) -> str:
    """A name as it may stand in an element id (the digest of one that may not)."""
    if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        return name
    return "h" + hashlib.sha256(name.encode()).hexdigest()[:12]


# -- refusals -----------------------------------------------------------------------------

# the reasons a logged request reached no verdict (VerdictEntry.error, the service's message),
# first match wins; the console reads the message, the service gives no code
REFUSALS: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    ("consent", "授权不符（成年成员未签、授权过期或案号已用）", re.compile(r"^consent refused")),
    ("not_registered", "不在户籍登记中", re.compile(r"not in the household register")),
    ("registry", "户籍登记系统未答复或拒绝", re.compile(r"^household registry")),
    ("custodian", "密钥托管方拒绝或不可达", re.compile(r"key custodian|custodian's")),
    ("policy", "无适用的政策参数", re.compile(r"^(unknown programme|unknown region|no parameter)")),
    ("internal", "服务内部错误", re.compile(r"^failed: ")),
)
OTHER_REFUSAL = ("other", "其他原因")
REFUSAL_ZH = {key: zh for key, zh, _ in REFUSALS} | {OTHER_REFUSAL[0]: OTHER_REFUSAL[1]}


def refusal_reason(error: str) -> str:
    """The reason (a key of REFUSAL_ZH) of a refused request's logged error."""
    return next((key for key, _, p in REFUSALS if p.search(error)), OTHER_REFUSAL[0])


def is_refusal(d: Mapping[str, Any]) -> bool:
    """An outcome entry of a request that reached no verdict: the error is set, no decision."""
    return d.get("kind") == "verdict" and d.get("decision") not in DECISIONS


@dataclass(frozen=True)
class ConsoleSettings:
    """How the console serves: page size, and how many of the latest entries the filters and
    charts read (the log itself is checked whole, in the browser)."""

    page_size: int = 50
    scan_limit: int = 20_000
    # origins (scheme://host[:port]) browsers reach the console by besides the address it
    # listens on, e.g. a TLS proxy in front of it; a POST from any other origin is refused
    origins: tuple[str, ...] = ()


@dataclass(frozen=True)
class Filters:
    kind: str = ""
    caller: str = ""
    district: str = ""
    since: dt.date | None = None
    until: dt.date | None = None

    @classmethod
    def of(cls, request: Request) -> Filters:
        q = request.query_params
        return cls(
            kind=q.get("kind", "") if q.get("kind", "") in KINDS else "",
            caller=q.get("caller", "").strip(),
            district=q.get("district", "").strip(),
            since=_date(q.get("since", "")),
            until=_date(q.get("until", "")),
        )

    def match(self, d: dict[str, Any], clock: Clock) -> bool:
        day = clock.local(d["time_unix_ms"]).date()
        return (
            (not self.kind or d["kind"] == self.kind)
            and (not self.caller or str(d["caller"]).startswith(self.caller))
            and (not self.district or d.get("district") == self.district)
            and (self.since is None or day >= self.since)
            and (self.until is None or day <= self.until)
        )

    def query(self) -> str:
        parts = {
            "kind": self.kind,
            "caller": self.caller,
            "district": self.district,
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
        }
        return urllib.parse.urlencode({k: v for k, v in parts.items() if v})


def _date(text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text) if text else None
    except ValueError:
        return None


@dataclass
class Console:
    """The console's state: the auditor's session, the access token and the open sessions."""

    session: AuditorSession
    settings: ConsoleSettings = field(default_factory=ConsoleSettings)
    clock: Clock = DEPLOYMENT
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    sessions: set[str] = field(default_factory=set)
    districts: Districts = field(default_factory=Districts.load)
    # the witnesses whose cosignatures every checkpoint shown or proven against must carry,
    # pinned as for `hedui audit verify` (None: none pinned, cosignatures are not checked),
    # and where they were pinned (a file, said on the pages)
    witnesses: WitnessPolicy | None = None
    witnesses_pinned_at: str = ""

    def size(self) -> int:
        return self.session.signed_size()

    def scan(self, size: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """The latest entries (at most ``scan_limit``), newest first, described."""
        start = max(0, size - self.settings.scan_limit)
        end = size
        while end > start:
            lo = max(start, end - MAX_ENTRIES)
            rows = self.session.source.entries(lo, end)
            for index, data in reversed(rows):
                yield index, _describe(data)
            end = lo

    def vkey(self) -> str:
        return vkey(key_name(self.session.origin), self.session.public_key)

    def latest(self) -> Cosigning:
        """The latest checkpoint's size and its witnesses' cosignatures, checked."""
        return self.cosigning(self.session.source.checkpoint())

    def cosigning(self, note: bytes | None) -> Cosigning:
        """The cosignatures of the checkpoint ``note`` by the witnesses pinned, checked as
        `hedui audit verify` checks them (:func:`~hedui.audit.auditor.check_cosigned`), once
        the log's key is found to have signed it."""
        if note is None:
            return Cosigning(NO_CHECKPOINT, 0, ("日志还没有签名检查点，没有可检查的见证联署。",))
        if self.witnesses is None:
            return Cosigning(
                UNCHECKED,
                _claimed_size(note),
                (
                    "未检查见证联署（cosignatures were not checked）：审计员没有固定见证方的验证"
                    f"公钥（{self.witnesses_pinned_at or '未给出'}），检查点只有日志自己的签名可依。",
                ),
            )
        origin = self.session.origin
        try:
            cp = parse_and_verify(note, key_name(origin), self.session.public_key, origin=origin)
        except VerificationError as e:
            return Cosigning(
                INVALID,
                _claimed_size(note),
                (
                    "✘ 检查点没有日志密钥的有效签名，其见证联署不予采信"
                    f"（the checkpoint's log signature does not verify）：{e}",
                ),
            )
        try:
            found = check_cosigned(note, cp, self.witnesses)
        except NotCosigned as e:
            return Cosigning(
                NOT_COSIGNED,
                cp.size,
                (
                    f"✘ NOT COSIGNED：检查点（大小 {cp.size}）没有所固定见证方的联署，可能是只给"
                    f"本审计员看的历史；浏览器不在它上面验证证明。{e}",
                ),
            )
        except TamperingDetected as e:
            return Cosigning(
                INVALID,
                cp.size,
                (f"✘ 见证联署无效（cosignature does not verify）：{e}",),
            )
        shown = tuple((c.name, self.clock.show(c.timestamp * 1000)) for c in found)
        return Cosigning(
            COSIGNED,
            cp.size,
            tuple(
                f"✔ 检查点（大小 {cp.size}）已由见证方 {name} 于 {when} 联署"
                f"（cosigned by the witness {name} at {when}）"
                for name, when in shown
            ),
            shown,
        )


# what the console found of a checkpoint's cosignatures: only COSIGNED is shown green
COSIGNED = "cosigned"
NOT_COSIGNED = "not_cosigned"  # fewer than the quorum of the pinned witnesses cosigned it
INVALID = "invalid"  # a pinned witness's cosignature (or the log's signature) does not verify
UNCHECKED = "unchecked"  # no witness pinned
NO_CHECKPOINT = "none"


@dataclass(frozen=True)
class Cosigning:
    """The console's check of the witnesses' cosignatures of one checkpoint (issue #23): its
    state, the size the checkpoint is of, what the page says, and, when cosigned, the
    witnesses' names and the times they cosigned (as shown)."""

    state: str
    size: int
    lines: tuple[str, ...]
    cosignatures: tuple[tuple[str, str], ...] = ()

    @property
    def css(self) -> str:
        """``ok`` (green) for a checkpoint cosigned, ``bad`` (red) for one that is not or whose
        cosignature does not verify, ``warn`` when nothing was checked."""
        if self.state == COSIGNED:
            return "ok"
        return "warn" if self.state in (UNCHECKED, NO_CHECKPOINT) else "bad"

    @property
    def refused(self) -> bool:
        """Not a checkpoint to prove against: the pinned witnesses did not (validly) cosign it."""
        return self.state in (NOT_COSIGNED, INVALID)

    def doc(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "size": self.size,
            "message": " ".join(self.lines),
            "cosignatures": [{"witness": n, "time": t} for n, t in self.cosignatures],
        }


def _claimed_size(note: bytes) -> int:
    """The size a note says it is of, not verified (as ``AuditorSession.signed_size``); 0 for
    a note without one."""
    try:
        return int(note.decode().split("\n")[1])
    except (UnicodeDecodeError, IndexError, ValueError):
        return 0


# -- the pages ---------------------------------------------------------------------------


def _describe(data: bytes) -> dict[str, Any]:
    """An entry described (``describe_entry``), its consent's registered campaign included."""
    d = describe_entry(data)
    consent = d.get("consent")
    if isinstance(consent, dict) and consent.get("standing") and "campaign" not in consent:
        body = getattr(audit_pb2.AuditEntry.FromString(data), d["kind"], None)
        campaign = getattr(getattr(body, "consent", None), "campaign", "")
        if isinstance(campaign, str) and campaign:
            consent["campaign"] = campaign
    return d


def _row(index: int, d: dict[str, Any], clock: Clock) -> dict[str, Any]:
    detail = ""
    if is_refusal(d):
        error = str(d.get("error", ""))
        detail = f"拒绝 · {REFUSAL_ZH[refusal_reason(error)]}：{error}"
    elif d["kind"] == "verdict":
        decision = d.get("decision", "")
        detail = f"{decision} {DECISION_ZH.get(decision, '')}"
        failed = d.get("connectors_failed", [])
        if failed:
            detail += " · 未答复 " + ",".join(f["connector_id"] for f in failed)
    elif d["kind"] == "monitoring":
        detail = " ".join(str(d.get(k, "")) for k in ("step", "event_kind", "alert_id")).strip()
    elif d["kind"] == "search":
        detail = f"search by {d.get('by', '?')}: {d.get('results', 0)} result(s)"
    elif d["kind"] == "alert":
        detail = f"{d.get('alert_kind', '')} {d.get('description', '')}"
    return {
        "index": index,
        "time": clock.show(d["time_unix_ms"]),
        "kind": d["kind"],
        "caller": d["caller"],
        "request_id": d.get("request_id", ""),
        "district": d.get("district", ""),
        "program": d.get("program", ""),
        "decision": d.get("decision", "") or ("REFUSED" if is_refusal(d) else ""),
        "detail": detail,
    }


KIND_ZH = {
    "request": "核对请求",
    "verdict": "核对结果",
    "search": "按人查询",
    "alert": "告警",
    "monitoring": "动态监测",
    "key_event": "密钥事件",
    "config_change": "配置变更",
}
OUTCOME_ZH = {"PASSED": "符合", "FAILED": "不符合", "UNDECIDED": "无法判定"}
# an entry's fields in the order and the words of the entry page; any other is shown by its name
FIELD_ZH = {
    "request_id": "请求号",
    "query_id": "查询号",
    "program": "救助项目",
    "region": "政策地区",
    "as_of": "核对基准日",
    "caseworker_id": "经办人",
    "household_size": "家庭人数",
    "policy_version": "政策版本",
    "consent_reference": "授权案号",
    "applicant_audit_token": "申请人审计令牌",
    "figures_commitment": "数字承诺（SHA-256）",
    "campaign": "复核批次",
    "by": "查询方式",
    "results": "结果数",
    "step": "步骤",
    "watch_id": "监测号",
    "event_kind": "事件",
    "event_on": "事件日期",
    "alert_id": "预警号",
    "outcome": "办结结果",
    "until": "监测截止",
    "alert_kind": "告警类型",
    "subject": "对象",
    "description": "说明",
    "count": "次数",
    "window_seconds": "时间窗（秒）",
    "event": "事件",
    "key_name": "密钥",
    "public_fingerprint": "公钥指纹",
    "setting": "设置",
    "old_value": "原值",
    "new_value": "新值",
}
_SHOWN_APART = {
    "kind", "time_unix_ms", "caller", "caller_role", "decision", "error", "district",
    "rules", "connectors_answered", "connectors_failed", "answer_digests", "consent",
}  # fmt: skip


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _consent_text(c: Mapping[str, Any]) -> str:
    sha = str(c.get("form_sha256", ""))
    parts = [f"案号 {c.get('case_number', '')}", f"签署于 {c.get('signed_on', '')}"]
    if c.get("standing"):
        campaign = registered_campaign({"consent": c})
        parts.insert(0, f"常设授权（批次 {campaign}）" if campaign else "常设授权")
    else:
        parts.append(f"签字成员 {len(c.get('signer_audit_tokens') or [])} 人")
    if sha:
        parts.append(f"授权书 SHA-256 {sha[:16]}…")
    return " · ".join(parts)


def entry_view(d: Mapping[str, Any], districts: Districts, clock: Clock) -> dict[str, Any]:
    """One entry as the entry page's table: (label, text, css class) rows, the rules with their
    outcomes, the sources failed, and the sources answered (folded on the page)."""
    kind = str(d.get("kind", ""))
    role = f"（{d['caller_role']}）" if d.get("caller_role") else ""
    fields: list[tuple[str, str, str]] = [
        ("类型", f"{kind} {KIND_ZH.get(kind, '')}".strip(), ""),
        ("时间", clock.show(int(d.get("time_unix_ms", 0))), "mono"),
        ("调用方", f"{d.get('caller', '')}{role}", ""),
    ]
    if is_refusal(d):
        error = str(d.get("error", ""))
        fields.append(("结论", f"拒绝：{REFUSAL_ZH[refusal_reason(error)]}", "REFUSED"))
        fields.append(("拒绝原因（原文）", error, ""))
    elif d.get("decision"):
        decision = str(d["decision"])
        fields.append(("结论", f"{decision} {DECISION_ZH.get(decision, '')}", decision))
    district = bool(d.get("district")) or (kind == "verdict" and not is_refusal(d))
    if district:
        code = str(d.get("district") or "")
        fields.append(("区县", districts.label(code) or NO_DISTRICT, ""))
    if isinstance(d.get("consent"), dict):
        fields.append(("授权", _consent_text(d["consent"]), ""))
    for key, value in d.items():
        if key in _SHOWN_APART or value in ("", None, [], {}):
            continue
        hexish = isinstance(value, str) and len(value) >= 32 and re.fullmatch(r"[0-9a-f]+", value)
        fields.append((FIELD_ZH.get(key, key), _text(value), "mono" if hexish else ""))
    digests = d.get("answer_digests") or {}
    answered = sorted(set(d.get("connectors_answered") or []) | set(digests))
    rules = [
        {
            "id": r.get("id", ""),
            "outcome": r.get("outcome", ""),
            "outcome_zh": OUTCOME_ZH.get(str(r.get("outcome", "")), ""),
            "threshold": "—" if r.get("threshold") is None else str(r["threshold"]),
        }
        for r in d.get("rules") or []
    ]
    return {
        "fields": fields,
        "district": district,
        "rules": rules,
        "failed": list(d.get("connectors_failed") or []),
        "answered": [(c, str(digests.get(c, ""))) for c in answered],
    }


def _groups_of(d: Mapping[str, Any], month: str, registered: str) -> list[tuple[str, str]]:
    """The charts an outcome counts in: the month it was decided in, and its re-verification
    campaign if it is part of one: ``("campaign", document number)`` for a registered one,
    else ``("recheck", name or roster digest)`` from its request id ``recheck-<name>-<line>``."""
    groups = [("month", month)]
    if registered:
        groups.append(("campaign", registered))
    elif unregistered := campaign_of(str(d.get("request_id", ""))):
        groups.append(("recheck", unregistered))
    return groups


@dataclass
class Stats:
    """Decisions by district and refusals by reason, per campaign and month; alerts per month."""

    decisions: dict[tuple[str, str], dict[str, Counter[str]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(Counter))
    )
    # group -> reason (a key of REFUSAL_ZH) -> requests refused
    refused: dict[tuple[str, str], Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    programs: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    raised: Counter[str] = field(default_factory=Counter)
    closed: dict[str, str] = field(default_factory=dict)  # alert id -> month closed
    overdue: set[str] = field(default_factory=set)
    escalated: set[str] = field(default_factory=set)
    raised_in: dict[str, str] = field(default_factory=dict)  # alert id -> month raised
    searches: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # month -> verdicts with a failure

    @classmethod
    def of(cls, rows: Iterable[tuple[int, dict[str, Any]]], clock: Clock) -> Stats:
        s = cls()
        entries = [d for _, d in rows]
        # a request entry may name the registered campaign its outcome entry does not
        campaigns = {
            (d.get("query_id"), d.get("request_id")): registered_campaign(d)
            for d in entries
            if d["kind"] == "request" and registered_campaign(d)
        }
        for d in entries:
            month = clock.local(d["time_unix_ms"]).strftime("%Y-%m")
            if d["kind"] == "verdict":
                registered = registered_campaign(d) or campaigns.get(
                    (d.get("query_id"), d.get("request_id")), ""
                )
                groups = _groups_of(d, month, registered)
                if is_refusal(d):
                    reason = refusal_reason(str(d.get("error", "")))
                    for group in groups:
                        s.refused[group][reason] += 1
                    continue
                district, decision = str(d.get("district") or ""), str(d["decision"])
                for group in groups:
                    s.decisions[group][district][decision] += 1
                s.programs[month][d.get("program", "?")] += 1
                if d.get("connectors_failed"):
                    s.failures[month] += 1
            elif d["kind"] == "search" and d.get("by") == "applicant":
                s.searches[month] += 1
            elif d["kind"] == "monitoring":
                alert, step = str(d.get("alert_id", "")), d.get("step")
                if step == "alert_raised":
                    s.raised[month] += 1
                    s.raised_in[alert] = month
                elif step == "alert_closed":
                    s.closed[alert] = month
                elif step == "alert_overdue":
                    s.overdue.add(alert)
                elif step == "alert_escalated":
                    s.escalated.add(alert)
        return s

    def groups(self) -> list[tuple[str, str]]:
        """Campaigns (registered first, by document number), then months, newest first."""
        found = set(self.decisions) | set(self.refused)
        order = {"campaign": 0, "recheck": 1, "month": 2}
        campaigns = sorted((g for g in found if g[0] != "month"), key=lambda g: (order[g[0]], g[1]))
        months = sorted((g for g in found if g[0] == "month"), reverse=True)
        return campaigns + months

    def alerts(self, month: str) -> dict[str, int]:
        ids = [a for a, m in self.raised_in.items() if m == month]
        return {
            "raised": self.raised[month],
            "closed_in_time": sum(a in self.closed and a not in self.overdue for a in ids),
            "closed_late": sum(a in self.closed and a in self.overdue for a in ids),
            "overdue_open": sum(a not in self.closed and a in self.overdue for a in ids),
            "escalated": sum(a in self.escalated for a in ids),
            "open": sum(a not in self.closed for a in ids),
        }

    def months(self) -> list[str]:
        found = {m for (k, m) in self.decisions if k == "month"}
        found |= {m for (k, m) in self.refused if k == "month"} | set(self.raised)
        return sorted(found, reverse=True)

    def chart(self, group: tuple[str, str], districts: Districts) -> dict[str, Any]:
        """Decisions by district, a district only where some were made; one without a district
        in the register last, as 未知区划."""
        by_district = self.decisions.get(group, {})
        codes = sorted(
            (c for c, n in by_district.items() if sum(n[x] for x in DECISIONS) > 0),
            key=lambda c: (c == "", c),
        )
        return {
            "codes": codes,
            "labels": [districts.label(c) or NO_DISTRICT for c in codes],
            "names": [districts.full(c) for c in codes],
            "series": [
                {
                    "decision": d,
                    "label": f"{d} {DECISION_ZH[d]}",
                    "data": [by_district[x][d] for x in codes],
                }
                for d in DECISIONS
            ],
        }

    def totals(self, group: tuple[str, str]) -> dict[str, Any]:
        """Decided by decision, refused by reason, and all the outcomes: decided + refused."""
        decided: Counter[str] = Counter()
        for c in self.decisions.get(group, {}).values():
            decided.update({d: c[d] for d in DECISIONS})
        refused = self.refused.get(group, Counter())
        return {
            "decided": {d: decided[d] for d in DECISIONS},
            "decided_total": sum(decided[d] for d in DECISIONS),
            "refused": [
                {"reason": r, "label": REFUSAL_ZH[r], "count": refused[r]}
                for r in REFUSAL_ZH
                if refused[r]
            ],
            "refused_total": sum(refused.values()),
            "total": sum(decided[d] for d in DECISIONS) + sum(refused.values()),
        }


def build_app(console: Console, *, templates_dir: Path = HERE / "templates") -> Starlette:
    templates = Jinja2Templates(directory=str(templates_dir))
    templates.env.globals["zone"] = console.clock.now().isoformat()[-6:]  # e.g. +08:00
    templates.env.globals["edition"] = console.districts.edition
    templates.env.filters["district"] = console.districts.label
    templates.env.filters["district_full"] = console.districts.full

    def page(request: Request, name: str, status: int = 200, **ctx: Any) -> Response:
        return templates.TemplateResponse(request, name, ctx, status_code=status)

    def log_page(request: Request) -> Response:
        filters = Filters.of(request)
        number = _int(request, "page", 1, low=1)
        cosigning = console.latest()
        size = cosigning.size
        per = console.settings.page_size
        matched = ((i, d) for i, d in console.scan(size) if filters.match(d, console.clock))
        rows, total = [], 0
        for i, d in matched:
            if (number - 1) * per <= total < number * per:
                rows.append(_row(i, d, console.clock))
            total += 1
        return page(
            request,
            "log.html",
            rows=rows,
            page=number,
            pages=max(1, -(-total // per)),
            total=total,
            size=size,
            filters=filters,
            kinds=KINDS,
            online=console.session.online,
            cosigning=cosigning,
        )

    def entry_page(request: Request) -> Response:
        index = int(request.path_params["index"])
        rows = console.session.source.entries(index, index + 1) if index <= MAX_INDEX else []
        if not rows:
            return page(request, "error.html", 404, message=f"日志中没有第 {index} 条。")
        d = _describe(rows[0][1])
        return page(
            request,
            "entry.html",
            index=index,
            entry_b64=_b64(rows[0][1]),
            row=_row(index, d, console.clock),
            view=entry_view(d, console.districts, console.clock),
            detail=json.dumps(d, ensure_ascii=False, indent=2, default=str),
            cosigning=console.latest(),
        )

    def verify_page(request: Request) -> Response:
        witnesses = console.witnesses
        return page(
            request,
            "verify.html",
            origin=console.session.origin,
            vkey=console.vkey(),
            witness_vkeys=[w.vkey for w in witnesses.witnesses] if witnesses else [],
            quorum=witnesses.quorum if witnesses else 0,
            pinned_at=console.witnesses_pinned_at,
            cosigning=console.latest(),
        )

    async def search_page(request: Request) -> Response:
        if request.method == "GET":
            return page(request, "search.html", rows=None, error=None)
        form = await request.form()
        id_number = str(form.get("id_number", "")).strip()
        try:
            found = search(
                console.session, id_number=id_number, caller=None, since=None, until=None
            )
        except HeduiError as e:
            return page(request, "search.html", 400, rows=None, error=str(e))
        rows = [_row(i, describe_entry(data), console.clock) for i, data in found]
        return page(request, "search.html", rows=rows, error=None)

    def coverage(size: int) -> dict[str, int]:
        return {"size": size, "scanned": min(size, console.settings.scan_limit)}

    def campaigns_page(request: Request) -> Response:
        cosigning = console.latest()
        size = cosigning.size
        stats = Stats.of(console.scan(size), console.clock)
        charts = [
            {
                "kind": kind,
                "name": name,
                "title": f"{name} 月" if kind == "month" else campaign_title(kind, name),
                "id": f"chart-{'month' if kind == 'month' else 'campaign'}-{_slug(name)}",
                "data": stats.chart((kind, name), console.districts),
                "totals": stats.totals((kind, name)),
            }
            for kind, name in stats.groups()
        ]
        alerts = [{"month": m, **stats.alerts(m)} for m in stats.months()]
        return page(
            request,
            "campaigns.html",
            charts=charts,
            alerts=alerts,
            decisions=DECISIONS,
            coverage=coverage(size),
            cosigning=cosigning,
        )

    def bulletin_page(request: Request) -> Response:
        today = console.clock.today()
        month = request.query_params.get("month") or today.strftime("%Y-%m")
        if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
            return page(request, "error.html", 400, message=f"月份 {month!r} 的格式应为 YYYY-MM。")
        cosigning = console.latest()
        size = cosigning.size
        stats = Stats.of(console.scan(size), console.clock)
        group = ("month", month)
        return page(
            request,
            "bulletin.html",
            month=month,
            chart=stats.chart(group, console.districts),
            totals=stats.totals(group),
            programs=stats.programs[month],
            alerts=stats.alerts(month),
            searches=stats.searches[month],
            failures=stats.failures[month],
            size=size,
            made_at=console.clock.show(int(console.clock.now().timestamp() * 1000)),
            decisions=DECISIONS,
            origin=console.session.origin,
            coverage=coverage(size),
            cosigning=cosigning,
        )

    # -- the bytes the browser checks; no verdict on them, but for the cosignatures -------

    def api_checkpoint(request: Request) -> Response:
        size = _int(request, "size", 0)
        note = console.session.source.checkpoint(size)
        if note is None:
            return JSONResponse({"error": "no checkpoint of that size"}, status_code=404)
        cosigning = console.cosigning(note)
        if cosigning.refused:
            # as `hedui audit verify` (NOT COSIGNED, nothing saved): not a checkpoint for the
            # browser to prove against or to remember; its check fails, and the page says why
            return JSONResponse(
                {"error": " ".join(cosigning.lines), "cosignature": cosigning.doc()},
                status_code=409,
            )
        return JSONResponse(
            {
                "note": note.decode(),
                "vkey": console.vkey(),
                "origin": console.session.origin,
                "cosignature": cosigning.doc(),
            }
        )

    def api_entries(request: Request) -> Response:
        start = _int(request, "start", 0)
        end = min(_int(request, "end", start + 1), start + MAX_ENTRIES)
        rows = console.session.source.entries(start, end) if end > start else []
        return JSONResponse({"entries": [{"index": i, "entry": _b64(e)} for i, e in rows]})

    def beyond(size: int) -> Response | None:
        """404 for a tree larger than the log's latest signed checkpoint."""
        if size <= console.size():
            return None
        return JSONResponse({"error": f"the log has no signed tree of size {size}"}, 404)

    def api_inclusion(request: Request) -> Response:
        index, size = _int(request, "index", 0), _int(request, "size", 1, low=1)
        if index >= size:
            raise BadParameter("index", f"must be below size ({size})")
        if (missing := beyond(size)) is not None:
            return missing
        hashes = console.session.source.inclusion_proof(index, size)
        return JSONResponse({"hashes": [_b64(h) for h in hashes]})

    def api_consistency(request: Request) -> Response:
        first = _int(request, "first", 1, low=1)
        second = _int(request, "second", 1, low=1)
        if first > second:
            raise BadParameter("first", f"must not exceed second ({second})")
        if (missing := beyond(second)) is not None:
            return missing
        hashes = console.session.source.consistency_proof(first, second)
        return JSONResponse({"hashes": [_b64(h) for h in hashes]})

    async def login(request: Request) -> Response:
        if request.method == "POST":
            token = str((await request.form()).get("token", ""))
            if hmac.compare_digest(token.encode(), console.token.encode()):
                return _signed_in(console, "/log")
            return page(request, "login.html", 403, error="访问令牌不正确。")
        return page(request, "login.html", error=None)

    routes = [
        Route("/", lambda r: RedirectResponse("/log", status_code=303)),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/log", log_page),
        Route("/entry/{index:int}", entry_page),
        Route("/verify", verify_page),
        Route("/search", search_page, methods=["GET", "POST"]),
        Route("/campaigns", campaigns_page),
        Route("/bulletin", bulletin_page),
        Route("/api/checkpoint", api_checkpoint),
        Route("/api/entries", api_entries),
        Route("/api/proof/inclusion", api_inclusion),
        Route("/api/proof/consistency", api_consistency),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]

    async def on_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, HeduiError):
            log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        message = str(exc) if isinstance(exc, HeduiError) else "内部错误，详见控制台的终端输出。"
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=503)
        return page(request, "error.html", 503, message=message)

    async def bad_parameter(request: Request, exc: Exception) -> Response:
        # the caller's mistake: a 400 naming the parameter, nothing logged
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": str(exc)}, status_code=400)
        assert isinstance(exc, BadParameter)
        message = f"参数 {exc.name} {exc.zh}（{exc}）"
        return page(request, "error.html", 400, message=message)

    return Starlette(
        routes=routes,
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=_gate(console, on_error))],
        exception_handlers={
            BadParameter: bad_parameter,
            HeduiError: on_error,
            Exception: on_error,
        },
    )


def _signed_in(console: Console, to: str) -> Response:
    session = secrets.token_urlsafe(32)
    console.sessions.add(session)
    response = RedirectResponse(to, status_code=303)
    response.set_cookie(COOKIE, session, httponly=True, samesite="strict", path="/")
    return response


def _gate(
    console: Console, on_error: Callable[[Request, Exception], Awaitable[Response]]
) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    """A state-changing request from elsewhere than the console's own pages is refused; every
    path but /login needs the session cookie; ``?token=`` (the printed link) signs in once and
    redirects to the same page without it. Every answer carries the security headers."""

    async def dispatch(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await admit(request, call_next)
        response.headers.update(SECURITY_HEADERS)
        return response

    async def admit(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.method not in SAFE_METHODS and not _same_origin(request, console):
            own = " or ".join(_own_origins(request, console)) or "the console's own"
            return PlainTextResponse(
                f"{request.method} refused: only this console's own pages may send it "
                f"(Origin must be {own}).\n",
                403,
            )
        if request.cookies.get(COOKIE) in console.sessions or request.url.path == "/login":
            try:
                return await call_next(request)
            except Exception as exc:  # answered here, so that it too carries the headers
                return await on_error(request, exc)
        token = request.query_params.get("token", "")
        if token and hmac.compare_digest(token.encode(), console.token.encode()):
            path = request.url.path
            return _signed_in(console, path if _LOCAL_PATH.match(path) else "/log")
        if request.url.path.startswith(("/api/", "/static/")):
            return JSONResponse({"error": "sign in with the console's access token"}, 401)
        return RedirectResponse("/login", status_code=303)

    return dispatch


_LOCAL_PATH = re.compile(r"^/(?![/\\])[A-Za-z0-9/_.-]*$")


def _own_origins(request: Request, console: Console) -> list[str]:
    """The origins of this console: scheme://host:port of the socket the request came in on
    (not the Host header, which the client chooses), and those configured (a proxy)."""
    found = []
    server = request.scope.get("server")
    if server and server[1] is not None:
        scheme, (host, port) = request.url.scheme, server
        host = f"[{host}]" if ":" in host else host
        found.append(f"{scheme}://{host}:{port}")
        if (scheme, port) in (("http", 80), ("https", 443)):
            found.append(f"{scheme}://{host}")  # browsers leave the default port out
    return found + list(console.settings.origins)


def _same_origin(request: Request, console: Console) -> bool:
    """A state-changing request from this console's own pages: another site, another port
    of this host (which SameSite cookies do not tell apart), or an opaque origin (``null``:
    a sandboxed frame, a data: URL, a file) may not submit its forms. Without an ``Origin``
    only a browser's ``Sec-Fetch-Site`` of same-origin or none (typed by the user) admits."""
    origin = request.headers.get("origin")
    if origin is not None:
        return origin in _own_origins(request, console)
    return request.headers.get("sec-fetch-site") in ("same-origin", "none")


class BadParameter(Exception):
    """A query parameter out of its bounds: the caller's mistake, answered with a 400."""

    def __init__(self, name: str, why: str, zh: str = "不在允许的范围内") -> None:
        super().__init__(f"parameter {name!r} {why}")
        self.name = name
        self.zh = zh


_DIGITS = re.compile(r"[0-9]{1,13}")


def _int(request: Request, name: str, default: int, *, low: int = 0, high: int = MAX_INDEX) -> int:
    """The whole number ``name`` (ASCII digits, ``low`` to ``high``), ``default`` if absent."""
    text = request.query_params.get(name)
    if text is None:
        return default
    if _DIGITS.fullmatch(text) and low <= int(text) <= high:
        return int(text)
    raise BadParameter(
        name, f"must be a whole number from {low} to {high}", f"应为 {low} 到 {high} 之间的整数"
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()

"""The intake client: send one application, get one verdict (一证申请 → 一键核对)."""

from __future__ import annotations

import tomllib
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from hedui.clients.errors import ClientError
from hedui.core.rpc import error_details, open_channel
from hedui.core.tls import TlsMaterial
from hedui.proto.v1 import common_pb2, verification_pb2, verification_pb2_grpc


@dataclass(frozen=True)
class IntakeProfile:
    address: str
    server_name: str
    tls: TlsMaterial | None

    @classmethod
    def load(cls, path: Path) -> IntakeProfile:
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ClientError(
                f"{path} does not exist; start the deployment with `hedui up --workdir {path.parent}` first"
            ) from None
        except tomllib.TOMLDecodeError as e:
            raise ClientError(f"{path}: not a valid profile: {e}") from None
        try:
            tls = None
            if not doc.get("insecure", False):
                tls = TlsMaterial(
                    Path(doc["ca"]).read_bytes(),
                    Path(doc["cert"]).read_bytes(),
                    Path(doc["key"]).read_bytes(),
                )
            return cls(str(doc["address"]), str(doc.get("server_name", "service")), tls)
        except KeyError as e:
            raise ClientError(f"{path}: the profile has no {e.args[0]}") from None
        except OSError as e:
            raise ClientError(f"{path}: cannot read {e.filename}: {e.strerror}") from None


class IntakeClient:
    def __init__(self, profile: IntakeProfile, timeout: float = 60.0) -> None:
        self._channel = open_channel(
            profile.address, tls=profile.tls, server_name=profile.server_name
        )
        self._stub = verification_pb2_grpc.VerificationServiceStub(self._channel)
        self._timeout = timeout

    def verify(self, request: verification_pb2.VerifyRequest) -> verification_pb2.Verdict:
        try:
            return self._stub.Verify(request, timeout=self._timeout)
        except grpc.RpcError as e:
            raise ClientError(describe_rpc_error(e)) from None

    def report(self, request: verification_pb2.ReportRequest) -> verification_pb2.Report:
        try:
            return self._stub.GetReport(request, timeout=self._timeout)
        except grpc.RpcError as e:
            raise ClientError(describe_rpc_error(e)) from None

    def close(self) -> None:
        self._channel.close()


def describe_rpc_error(e: grpc.RpcError) -> str:
    if not isinstance(e, grpc.Call):
        return str(e)
    code = e.code()
    details = e.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE and "failed to connect" in details.lower():
        # "failed to connect to all addresses; last error: UNKNOWN: ipv4:…: Connection refused"
        cause = details.rsplit(": ", 1)[-1].strip().lower() if ": " in details else ""
        because = f" ({cause})" if cause and "failed to connect" not in cause else ""
        return (
            f"UNAVAILABLE: the verification service is not reachable{because}; "
            "is `hedui up` running?"
        )
    lines = [f"{code.name}: {e.details()}"]
    for d in error_details(e):
        for v in getattr(d, "field_violations", []):
            lines.append(f"  {v.field}: {v.description}")
        for v in getattr(d, "violations", []):
            lines.append(f"  {v.subject}: {v.description}")
    return "\n".join(lines)


def verdict_to_dict(v: verification_pb2.Verdict) -> dict[str, Any]:
    outcome = {common_pb2.PASSED: True, common_pb2.FAILED: False}
    return {
        "request_id": v.request_id,
        "decision": common_pb2.Decision.Name(v.decision),
        "benefit_fen": v.benefit_fen,
        "household_size": v.household_size,
        "program": v.program,
        "region": v.region,
        "as_of": v.as_of,
        "policy_version": v.policy_version,
        "connectors_answered": v.connectors_answered,
        "failures": [{"connector_id": f.connector_id, "reason": f.reason} for f in v.failures],
        "rules": [
            {
                "id": r.id,
                "passed": outcome.get(r.outcome),
                "value": r.value if r.HasField("value") else None,
                "threshold": r.threshold if r.HasField("threshold") else None,
                "comparison": r.comparison,
                "unit": r.unit,
                "message_zh": r.message_zh,
                "message_en": r.message_en,
                "missing_sources": list(r.missing_sources),
                "references": list(r.references),
                "figures": [
                    {
                        "name": f.name,
                        "value": f.value,
                        "comparison": f.comparison,
                        "threshold": f.threshold,
                        "unit": f.unit,
                    }
                    for f in r.figures
                ],
            }
            for r in v.rules
        ],
        # keep it with the case: it opens the audit entry's commitment to these figures
        "figures_opening": v.figures_opening.hex(),
        "audit": {
            "leaf_index": v.audit.leaf_index,
            "checkpoint": v.audit.checkpoint.decode("utf-8", "replace"),
            "inclusion_proof": [h.hex() for h in v.audit.inclusion_proof],
        },
    }


def figures_from_dict(d: dict[str, Any]) -> verification_pb2.Verdict:
    """The committed figures of a verdict saved by ``verdict_to_dict`` (a case file), for
    ``hedui audit check``; KeyError, TypeError or ValueError for a file of another shape."""
    v = verification_pb2.Verdict(
        request_id=str(d["request_id"]),
        program=str(d["program"]),
        region=str(d["region"]),
        as_of=str(d["as_of"]),
        policy_version=str(d["policy_version"]),
        household_size=int(d["household_size"]),
        decision=common_pb2.Decision.Value(str(d["decision"])),
        benefit_fen=int(d["benefit_fen"]),
        figures_opening=bytes.fromhex(d["figures_opening"]),
    )
    outcomes = {True: common_pb2.PASSED, False: common_pb2.FAILED, None: common_pb2.UNDECIDED}
    for r in d["rules"]:
        rule = v.rules.add(id=str(r["id"]), outcome=outcomes[r["passed"]])
        if r.get("value") is not None:
            rule.value = int(r["value"])
        if r.get("threshold") is not None:
            rule.threshold = int(r["threshold"])
        for f in r.get("figures", []):
            rule.figures.add(
                name=str(f["name"]),
                value=int(f["value"]),
                comparison=str(f["comparison"]),
                threshold=int(f["threshold"]),
            )
    return v


def format_fen(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


DECISION_ZH = {"ELIGIBLE": "准予", "INELIGIBLE": "不予", "NEEDS_REVIEW": "需人工复核"}
NO_BENEFIT = "—"  # a verdict that needs review has no benefit yet (not a benefit of 0.00)


def decision_text(decision: common_pb2.Decision.ValueType | str) -> str:
    """A decision for a person: ``ELIGIBLE 准予``, ``INELIGIBLE 不予``, ``NEEDS_REVIEW 需人工复核``."""
    name = decision if isinstance(decision, str) else common_pb2.Decision.Name(decision)
    zh = DECISION_ZH.get(name)
    return f"{name} {zh}" if zh else name


def benefit_text(v: verification_pb2.Verdict) -> str:
    """The monthly benefit in yuan, or ``—`` while the verdict needs review."""
    return NO_BENEFIT if v.decision == common_pb2.NEEDS_REVIEW else format_fen(v.benefit_fen)


def width(text: str) -> int:
    """Columns ``text`` takes on a terminal: a Chinese character takes two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def pad(text: str, columns: int) -> str:
    """``text`` left-aligned in ``columns`` terminal columns."""
    return text + " " * max(0, columns - width(text))


def verdict_to_text(v: verification_pb2.Verdict) -> str:
    d = verdict_to_dict(v)
    marks = {True: "passed", False: "FAILED", None: "undecided"}
    lines = [
        f"decision       {decision_text(v.decision)}",
        f"benefit        {benefit_text(v)} "
        + ("(set after the review)" if v.decision == common_pb2.NEEDS_REVIEW else "yuan per month"),
        f"household      {v.household_size} member(s)",
        f"programme      {v.program} ({v.region}), application date {v.as_of}",
        f"sources        {v.connectors_answered} answered, {len(v.failures)} failed",
    ]
    for f in v.failures:
        lines.append(f"  missing      {f.connector_id}: {f.reason}")
    lines.append("rules")
    for r, rule in zip(d["rules"], v.rules, strict=True):
        lines.append(f"  {r['id']:<18} {marks[r['passed']]:<10} {r['message_zh']}")
        lines.append(f"  {'':<18} {'':<10} {r['message_en']}")
        for ref in rule.references:
            lines.append(f"  {'':<18} {'':<10} 依据 basis: {ref}")
    lines += [
        f"policy version {v.policy_version}",
        f"request id     {v.request_id}",
        f"audit          leaf {v.audit.leaf_index} in the signed log",
    ]
    return "\n".join(lines)

"""The intake client: send one application, get one verdict (一证申请 → 一键核对)."""

from __future__ import annotations

import datetime as dt
import re
import tomllib
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hedui.clients.errors import ClientError
from hedui.core.clock import DEPLOYMENT
from hedui.core.errors import CryptoError
from hedui.proto.v1 import common_pb2, verification_pb2

if TYPE_CHECKING:  # grpc and the TLS code are imported where used: `hedui --help` stays quick
    import grpc

    from hedui.core.tls import TlsMaterial

INTAKE_STEP = 'README, "Operating hedui", "Intake host"'
# here rather than in hedui.clients.auditor, which imports the log's code: `hedui audit --help`
AUDITOR_STEP = 'README, "Operating hedui", "Auditor host"'


def intake_profile_path(profile: Path | None, workdir: Path | None) -> Path:
    """The intake profile a command calls with: ``--profile`` (an intake host's, or one from
    `hedui keys issue`), else the `hedui up` working directory's intake.toml."""
    if profile is not None:
        return profile
    if workdir is None:
        raise ClientError(
            f"say which service to call: --profile FILE on an intake host ({INTAKE_STEP}), "
            "or --workdir DIR of a `hedui up` deployment"
        )
    from hedui.core.workdir import Workdir

    return Workdir(workdir).intake_profile


@dataclass(frozen=True)
class IntakeProfile:
    address: str
    server_name: str
    tls: TlsMaterial | None
    cert_path: Path | None = None  # where the profile's certificate and CA were read (messages)
    ca_path: Path | None = None

    @classmethod
    def load(cls, path: Path) -> IntakeProfile:
        missing = (
            f"{path} does not exist; `hedui up --workdir DIR` writes DIR/intake.toml, and an "
            f"intake or auditor host writes its own profile ({INTAKE_STEP})"
        )
        return cls.from_doc(path, read_profile(path, missing))

    @classmethod
    def from_doc(cls, path: Path, doc: dict[str, Any]) -> IntakeProfile:
        """The client settings of a profile read by :func:`read_profile`: address, TLS files."""
        from hedui.core.tls import TlsMaterial

        try:
            tls, cert, ca = None, None, None
            if not doc.get("insecure", False):
                cert, ca = Path(doc["cert"]), Path(doc["ca"])
                tls = TlsMaterial(ca.read_bytes(), cert.read_bytes(), Path(doc["key"]).read_bytes())
            return cls(str(doc["address"]), str(doc.get("server_name", "service")), tls, cert, ca)
        except KeyError as e:
            raise ClientError(f"{path}: the profile has no {e.args[0]}") from None
        except OSError as e:
            raise ClientError(f"{path}: cannot read {e.filename}: {e.strerror}") from None


def read_profile(path: Path, missing: str) -> dict[str, Any]:
    """A client profile's TOML; ``missing``: what to say when there is no such file."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClientError(missing) from None
    except OSError as e:
        raise ClientError(f"cannot read {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ClientError(f"{path}: not a valid profile: {e}") from None


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _shown(t: dt.datetime) -> str:
    return DEPLOYMENT.show(int(t.timestamp() * 1000))


def check_certificate_dates(profile: IntakeProfile, now: dt.datetime) -> None:
    """Refuse, before connecting, a profile whose own certificate or trusted CA certificate is
    expired or not yet valid by this machine's clock (``now``), saying which and what to do:
    otherwise the service only closes the connection, which looks like a service that is down."""
    if profile.tls is None:
        return
    from hedui.core.tls import identity_from_pem, outside_validity

    problems = []
    for pem, path, own in (
        (profile.tls.cert_pem, profile.cert_path, True),
        (profile.tls.ca_pem, profile.ca_path, False),
    ):
        where = f" {path}" if path else ""
        try:
            found = outside_validity(pem, now)
            who = identity_from_pem(pem) if own else None
        except (CryptoError, ValueError):
            what = "certificate" if own else "CA certificate"
            raise ClientError(
                f"the profile's {what}{where} is not a certificate (PEM): restore it, or ask your "
                "operator for the files again"
            ) from None
        if found is None:
            continue
        clock = f"(this machine's clock says {_shown(now)})"
        if who is not None:
            what = f"your {who.role or 'client'} certificate{where}"
            renew = (
                "ask your operator for a new one (`hedui keys request --party "
                f"{who.name or 'NAME'} --role {who.role or 'ROLE'} --keys DIR`, then "
                "`hedui keys install`)"
            )
        else:
            what = f"the CA certificate{where} this machine trusts"
            renew = "ask your operator for the deployment's current ca.pem"
        if found.state == "expired":
            problems.append(
                f"{what} expired on {_shown(found.at)} {clock}: {renew}; "
                "if that date is wrong, set this machine's clock right"
            )
        else:
            problems.append(
                f"{what} is not valid until {_shown(found.at)} {clock}: this machine's clock "
                "may be wrong; set it right and try again"
            )
    if problems:
        raise ClientError("\n".join(problems))


def open_service_channel(
    profile: IntakeProfile, *, now: Callable[[], dt.datetime] = utc_now
) -> grpc.Channel:
    """A channel to the verification service of ``profile``, once its certificates' dates were
    checked against this machine's clock (every client command connects through here)."""
    from hedui.core.rpc import open_channel

    check_certificate_dates(profile, now())
    return open_channel(profile.address, tls=profile.tls, server_name=profile.server_name)


class IntakeClient:
    def __init__(
        self,
        profile: IntakeProfile,
        timeout: float = 60.0,
        *,
        now: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        from hedui.proto.v1 import verification_pb2_grpc

        self._channel = open_service_channel(profile, now=now)
        self._stub = verification_pb2_grpc.VerificationServiceStub(self._channel)
        self._timeout = timeout

    def verify(
        self, request: verification_pb2.VerifyRequest, *, fields: Callable[[str], str] = str
    ) -> verification_pb2.Verdict:
        """The verdict; a refusal's fields are named by ``fields`` (`hedui verify`: its
        options, :func:`verify_option`)."""
        import grpc

        try:
            return self._stub.Verify(request, timeout=self._timeout)
        except grpc.RpcError as e:
            raise ClientError(describe_rpc_error(e, fields=fields)) from None

    def report(self, request: verification_pb2.ReportRequest) -> verification_pb2.Report:
        import grpc

        try:
            return self._stub.GetReport(request, timeout=self._timeout)
        except grpc.RpcError as e:
            raise ClientError(describe_rpc_error(e)) from None

    def close(self) -> None:
        self._channel.close()


def describe_rpc_error(
    e: grpc.RpcError,
    *,
    fields: Callable[[str], str] = str,
    peer: str = "the verification service",
) -> str:
    """A failed call for a person: the code, what ``peer`` said, and each of its reasons once,
    a request's field named by ``fields`` (e.g. :func:`verify_option`)."""
    import grpc

    from hedui.core.rpc import error_details, handshake_failure

    if not isinstance(e, grpc.Call):
        return str(e)
    code = e.code()
    details = e.details() or ""
    failed = handshake_failure(details) if code == grpc.StatusCode.UNAVAILABLE else None
    if failed is not None:
        return "UNAVAILABLE: " + handshake_text(failed.fault, failed.reason, peer)
    if code == grpc.StatusCode.UNAVAILABLE and "failed to connect" in details.lower():
        # "failed to connect to all addresses; last error: UNKNOWN: ipv4:…: Connection refused"
        cause = details.rsplit(": ", 1)[-1].strip().lower() if ": " in details else ""
        because = f" ({cause})" if cause and "failed to connect" not in cause else ""
        return f"UNAVAILABLE: {peer} is not reachable{because}; is `hedui up` running?"
    bad_fields: list[tuple[str, str]] = []
    others: list[tuple[str, str]] = []
    for d in error_details(e):
        bad_fields += [(v.field, v.description) for v in getattr(d, "field_violations", [])]
        others += [(v.subject, v.description) for v in getattr(d, "violations", [])]
    return refusal_text(code.name, details, bad_fields, others, fields)


def refusal_text(
    code: str,
    message: str,
    bad_fields: Sequence[tuple[str, str]],
    others: Sequence[tuple[str, str]] = (),
    fields: Callable[[str], str] = str,
) -> str:
    """``CODE: message`` and each reason of a refusal once. The service's message repeats
    its field violations (``invalid request: id_number: …; as_of: …``): they are listed one a
    line, each field named by ``fields``, after what the message says besides; a precondition
    or quota violation the message already says is not repeated."""
    said = message
    found = [
        i for field, why in bad_fields if why and (i := _find(message, f"{field}: {why}", why)) >= 0
    ]
    if bad_fields and len(found) == len(bad_fields):  # the message only lists them
        said = message[: min(found)].rstrip(" :;,\n")
    lines = [f"{code}: {said}" if said else f"{code}:"]
    lines += [f"  {fields(field)}: {why}" for field, why in bad_fields]
    lines += [f"  {fields(subject)}: {why}" for subject, why in others if why not in message]
    if len(lines) == 2 and not said:  # one reason: on one line
        return f"{code}: {lines[1].strip()}"
    return "\n".join(lines)


def _find(text: str, *needles: str) -> int:
    for needle in needles:
        if (i := text.find(needle)) >= 0:
            return i
    return -1


# The option of `hedui verify` that sets each field of a VerifyRequest (VerifyRequest's
# fields as the service's refusals name them; a repeated field is indexed, from 0)
VERIFY_OPTIONS = {
    "id_number": "--id",
    "program": "--program",
    "region": "--region",
    "as_of": "--as-of",
    "caseworker_id": "--caseworker",
    "request_id": "--request-id",
    "consent.case_number": "--case-number",
    "consent.signed_on": "--signed-on",
    "consent.form_sha256": "--consent-form",
    "consent.signer_id_numbers": "--signer",
    "consent.signers": "--signer",
}
_INDEXED = re.compile(r"^(.+)\[(\d+)\]$")


def verify_option(field: str) -> str:
    """The `hedui verify` option a refused field came from: ``consent.signer_id_numbers[1]``
    is "the 2nd --signer", ``as_of`` is ``--as-of``; a field of no option as it is."""
    m = _INDEXED.match(field)
    base, index = (m.group(1), int(m.group(2))) if m else (field, None)
    option = VERIFY_OPTIONS.get(base)
    if option is None:
        return field
    if index is None:
        return option
    n = index + 1
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"the {n}{suffix} {option}"


CLOCK_HINT = "check that this machine's date and time are right"


def handshake_text(fault: str, reason: str, peer: str = "the verification service") -> str:
    """What a failed TLS handshake with ``peer`` means for a person, and whose certificate is
    likely at fault (see :func:`hedui.core.rpc.handshake_failure`)."""
    failed = f"the TLS handshake with {peer} failed"
    if fault == "server":
        if "expired" in reason:
            why = (
                "the service's certificate has expired by this machine's clock: "
                f"{CLOCK_HINT} (a clock that runs ahead makes it look expired); if they are, "
                "the service's operator must renew its certificate"
            )
        elif "not yet valid" in reason:
            why = (
                "the service's certificate is not valid yet by this machine's clock: the clock "
                f"is probably behind; {CLOCK_HINT}"
            )
        elif "issuer" in reason or "self signed" in reason or "self-signed" in reason:
            why = (
                "the service's certificate is not issued by the CA this machine trusts (the "
                "ca): get the deployment's current ca.pem from your operator, or check the "
                "profile's address"
            )
        else:
            why = (
                f"this machine could not verify the service's certificate ({reason}): the "
                f"service's certificate is likely at fault; {CLOCK_HINT}"
            )
        return f"{failed}: {why}"
    if fault == "server-name":
        return (
            f"{failed}: the certificate of the server at that address is not the service's "
            "(not for the profile's server_name): check the profile's address and server_name"
        )
    if fault == "plaintext":
        return (
            f"{failed}: the server at that address does not speak TLS (it runs with "
            "--insecure?): give the profile `insecure = true`, or run the service with TLS"
        )
    if fault == "own":
        return (
            f"{failed}: this machine's certificate and key cannot be used together (the key "
            "is not the certificate's, or a file is damaged): check the profile's cert and key"
        )
    return (
        f"{failed}: the service closed the connection ({reason}), most likely because it did "
        "not accept this machine's certificate: expired or not yet valid by the service's "
        f"clock, or issued by another CA; {CLOCK_HINT} and ask your operator whether your "
        "certificate is still valid"
    )


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
        # "decision_only": the benefit is for the payment system alone, sealed to its key
        "disclosure": v.disclosure,
        "sealed_benefit": v.sealed_benefit.hex(),
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
    """The monthly benefit in yuan, or ``—`` while the verdict needs review (or while it is
    sealed for the payment system)."""
    if v.decision == common_pb2.NEEDS_REVIEW or v.sealed_benefit:
        return NO_BENEFIT
    return format_fen(v.benefit_fen)


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
        + (
            "(set after the review)"
            if v.decision == common_pb2.NEEDS_REVIEW
            else "(sealed for the payment system: `hedui payment open`)"
            if v.sealed_benefit
            else "yuan per month"
        ),
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

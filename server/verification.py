"""One verification: validate → audit request → household → fan-out → custodian → rules → audit verdict.

:class:`Verifier` is the orchestration, free of gRPC; :class:`VerificationServicer` is the edge
that turns requests into applications and errors into status codes with ``google.rpc`` details.
Logs name the request id and the query id only, never an ID number.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import grpc
from google.rpc import error_details_pb2

from hedui.audit import commitment, merkle
from hedui.audit.errors import AuditError, VerificationError
from hedui.audit.log import AuditLog, Receipt
from hedui.core import metrics, rpc
from hedui.core.answers import aggregate
from hedui.core.clock import DEPLOYMENT, is_adult, parse_date
from hedui.core.custody import EvidenceSource, Totals
from hedui.core.deployment import kind_of
from hedui.core.errors import InvalidResidentId
from hedui.core.resident_id import ResidentId, looks_like_id
from hedui.core.resident_id import parse as parse_id
from hedui.core.tls import PeerIdentity
from hedui.core.tokens import TokenKey
from hedui.proto.v1 import (
    audit_pb2,
    common_pb2,
    connector_pb2,
    verification_pb2,
    verification_pb2_grpc,
)
from hedui.server import consent
from hedui.server.consent import Consent, ConsentRefused
from hedui.server.custodian_client import Custodian
from hedui.server.errors import CustodianRefused, PolicyError, ServiceError
from hedui.server.evidence import log_evidence
from hedui.server.fanout import (
    ConnectorPool,
    GrantedHousehold,
    MonitoringRefused,
    RegistryClient,
    RegistryNotFound,
    SourceUnavailable,
)
from hedui.server.policy.book import PROGRAMS, PolicyBook
from hedui.server.policy.engine import Decision, HouseholdFacts, Member, Outcome, RuleResult
from hedui.server.quotas import Alert, QuotaExceeded, Quotas, QuotaSettings
from hedui.server.report import (
    LANGS,
    PdfUnavailable,
    ReportNotFound,
    ReportNotReady,
    ReportSource,
    render_html,
    render_pdf,
)
from hedui.server.requests import RequestBook, StateUnavailable, is_purged
from hedui.server.streams import PAUSE, StreamIdle, paced

T = TypeVar("T")
SELF = PeerIdentity("hedui-service", "service")  # the service's own entries (alerts)
log = logging.getLogger("hedui.server")

MAX_TEXT = 128
# the fields a request entry and its outcome entry share
_REQUEST_FIELDS = (
    "caseworker_id",
    "request_id",
    "program",
    "region",
    "consent_reference",
    "applicant_audit_token",
    "as_of",
    "query_id",
)
_DECISIONS = {
    Decision.ELIGIBLE: common_pb2.ELIGIBLE,
    Decision.INELIGIBLE: common_pb2.INELIGIBLE,
    Decision.NEEDS_REVIEW: common_pb2.NEEDS_REVIEW,
}
_OUTCOMES = {
    Outcome.PASSED: common_pb2.PASSED,
    Outcome.FAILED: common_pb2.FAILED,
    Outcome.UNDECIDED: common_pb2.UNDECIDED,
}


@dataclass(frozen=True)
class Monitored:
    """A monitored household's applicant, named by the handle the registry issued at enrolment
    (the service keeps no ID number) and the audit token computed then."""

    handle: bytes
    audit_token: bytes


@dataclass(frozen=True)
class Application:
    request_id: str
    resident: ResidentId | Monitored
    program: str
    region: str
    consent: Consent
    as_of: dt.date
    as_of_requested: str = ""  # as sent: empty means "today", so a retry after midnight matches
    caseworker_id: str = ""  # the intake system's user who asked, if it says
    monitor_until: dt.date | None = None  # ask the registry for a monitoring handle


def resident_of(app: Application) -> ResidentId:
    """The applicant's ID number (the batch path has one for every application)."""
    if isinstance(app.resident, ResidentId):
        return app.resident
    raise ServiceError("a monitored household is re-checked on its own, not in a batch")


class RequestConflict(ServiceError):
    pass


class RequestExpired(ServiceError):
    """A request id whose verdict's figures were purged after the retention period."""


def purged_message(kept: verification_pb2.Verdict) -> str:
    return (
        f"request {kept.request_id!r} was decided ({common_pb2.Decision.Name(kept.decision)}, "
        f"audit entry {kept.audit.leaf_index}); its figures were purged after the retention "
        "period: the decision is in the audit log, a new check needs a new request id"
    )


class RequestInProgress(ServiceError):
    pass


class Verifier:
    def __init__(
        self,
        *,
        registry: RegistryClient,
        pool: ConnectorPool,
        custodian: Custodian,
        policy: PolicyBook,
        audit: AuditLog,
        audit_key: TokenKey,
        requests: RequestBook,
        now: Callable[[], dt.datetime],
        new_query_id: Callable[[], str] = lambda: secrets.token_hex(16),
        new_salt: Callable[[], bytes] = lambda: secrets.token_bytes(commitment.SALT_BYTES),
    ) -> None:
        self.registry = registry
        self.pool = pool
        self.custodian = custodian
        self.policy = policy
        self.audit = audit
        self.audit_key = audit_key
        self.requests = requests
        self.now = now
        self.new_query_id = new_query_id
        self.new_salt = new_salt

    def log_alert(self, alert: Alert) -> None:
        """Write an alert to the audit log, as the service itself."""
        entry = self.entry_for(SELF)
        entry.alert.CopyFrom(
            audit_pb2.Alert(
                kind=alert.kind,
                subject=alert.subject,
                description=alert.description,
                count=alert.count,
                window_seconds=alert.window_seconds,
            )
        )
        self.audit.append([entry])
        log.warning("alert %s for %s: %s", alert.kind, alert.subject, alert.description)

    def entry_for(self, caller: PeerIdentity) -> audit_pb2.AuditEntry:
        return audit_pb2.AuditEntry(
            time_unix_ms=int(self.now().timestamp() * 1000),
            caller=caller.name,
            caller_role=caller.role,
        )

    def request_key(self, caller: PeerIdentity, request_id: str) -> bytes:
        """A request's row in the state: an HMAC of its caller and request id."""
        return self.audit_key.mac(f"request\0{caller.name}\0{request_id}".encode())

    def request_keys(self, app: Application, caller: PeerIdentity) -> tuple[bytes, bytes]:
        """(idempotency key, application fingerprint): HMACs, so the table holds no ID."""
        key = self.request_key(caller, app.request_id)
        who = app.resident
        parts = [
            who.value if isinstance(who, ResidentId) else f"monitored:{who.audit_token.hex()}",
            app.program,
            app.region,
            app.consent.fingerprint(),
            app.as_of_requested,
        ]
        return key, self.audit_key.mac("\0".join(parts).encode())

    def verify(self, app: Application, caller: PeerIdentity) -> verification_pb2.Verdict:
        """Verify once per (caller, request id): a repeat gets the stored verdict."""
        return self.check(app, caller)[0]

    def applicant_token(self, app: Application) -> bytes:
        who = app.resident
        return self.audit_key.token(who) if isinstance(who, ResidentId) else who.audit_token

    def check(
        self, app: Application, caller: PeerIdentity
    ) -> tuple[verification_pb2.Verdict, GrantedHousehold | None]:
        """:meth:`verify`, and the household as the registry answered it (None for a repeat,
        answered from the stored verdict)."""
        self.policy.check(app.program, app.region, app.as_of)
        self.check_consent(app)
        request_key, fingerprint = self.request_keys(app, caller)
        earlier = self.requests.claim(request_key, fingerprint)
        if earlier is not None:
            if earlier[0] != fingerprint:
                raise RequestConflict(
                    f"request id {app.request_id!r} was already used for a different application"
                )
            if earlier[1] is None:
                raise RequestInProgress(
                    f"request {app.request_id!r} is being verified; retry shortly"
                )
            kept = verification_pb2.Verdict.FromString(earlier[1])
            if is_purged(kept):
                raise RequestExpired(purged_message(kept))
            return kept, None
        try:
            verdict, household = self._verify(app, caller, request_key)
        except BaseException:
            self.requests.release(request_key)
            raise
        try:
            self.requests.complete(request_key, verdict.SerializeToString(deterministic=True))
        except StateUnavailable:
            # the verdict is in the audit log: the caller gets it; the next start of the
            # service settles the claim from the verdict kept before it was logged
            log.error("request=%s: verdict logged, state not recorded", app.request_id)
        return verdict, household

    def settle(self) -> tuple[int, int]:
        """At start: settle the claims a previous life of the service left in progress. A
        request whose verdict is in the log is answered from the verdict kept before it was
        logged; one with no outcome gets an "abandoned" outcome entry and may be retried at once.
        Returns (answered from the log, abandoned)."""
        claims = self.requests.open_claims()
        if not claims:
            return 0, 0
        store = self.audit.store
        size = store.size()  # every stored entry, signed or not
        begun = {c.query_id for c in claims if c.query_id}
        start = min((c.from_size for c in claims if c.from_size is not None), default=size)
        requests: dict[bytes, audit_pb2.AuditEntry] = {}  # claim key -> its request entry
        outcomes: dict[tuple[str, str, str], int] = {}  # (caller, request id, query id) -> leaf
        failed: set[tuple[str, str, str]] = set()
        for page in range(start, size, 1000):
            for index, data in store.entries(page, min(size, page + 1000)):
                e = audit_pb2.AuditEntry.FromString(data)
                if e.HasField("request") and e.request.query_id in begun:
                    key = self.audit_key.mac(
                        f"request\0{e.caller}\0{e.request.request_id}".encode()
                    )
                    requests[key] = e
                elif e.HasField("verdict") and e.verdict.query_id in begun:
                    k = (e.caller, e.verdict.request_id, e.verdict.query_id)
                    outcomes[k] = index
                    if e.verdict.error:
                        failed.add(k)
        abandoned, answer = [], []
        for c in claims:
            request = requests.get(c.request_key)
            if request is None:  # the verification never reached the log
                self.requests.release(c.request_key)
                continue
            r = request.request
            k = (request.caller, r.request_id, r.query_id)
            if k in outcomes and k not in failed and c.pending is not None:
                answer.append((c, outcomes[k]))
                continue
            if k not in outcomes:
                entry = audit_pb2.AuditEntry(
                    time_unix_ms=int(self.now().timestamp() * 1000),
                    caller=request.caller,
                    caller_role=request.caller_role,
                )
                for name in _REQUEST_FIELDS:  # the outcome names what its request named
                    setattr(entry.verdict, name, getattr(r, name))
                entry.verdict.consent.CopyFrom(r.consent)
                entry.verdict.error = "abandoned: the service stopped before a verdict; retry"
                abandoned.append(entry)
            self.requests.release(c.request_key)
        if abandoned:
            self.audit.append(abandoned)  # its checkpoint covers every earlier entry too
        if answer:
            latest = store.latest_checkpoint()
            if latest is None or latest[0] < size:
                note = self.audit.sign(store.size())
                latest = (store.size(), note)
            completed = []
            for c, leaf in answer:
                assert c.pending is not None
                verdict = verification_pb2.Verdict.FromString(c.pending)
                proof = store.inclusion_proof(leaf, latest[0])
                verdict.audit.CopyFrom(receipt_pb(Receipt(leaf, latest[1], tuple(proof))))
                completed.append((c.request_key, verdict.SerializeToString(deterministic=True)))
            self.requests.complete_many(completed)
        if answer or abandoned:
            log.info(
                "settled %d request(s) from the log, %d abandoned", len(answer), len(abandoned)
            )
        return len(answer), len(abandoned)

    def report_source(self, request_id: str, caller: PeerIdentity) -> ReportSource:
        """What the report of ``caller``'s request is made from: the kept verdict, its audit
        entry, and the signed checkpoint of its receipt with the entry's proof checked."""
        known, kept = self.requests.lookup(self.request_key(caller, request_id))
        if not known:
            raise ReportNotFound(f"no verification by {caller.name} has request id {request_id!r}")
        if kept is None:
            raise ReportNotReady(f"request {request_id!r} is being verified; ask again shortly")
        verdict = verification_pb2.Verdict.FromString(kept)
        index = verdict.audit.leaf_index
        rows = self.audit.store.entries(index, index + 1)
        entry = audit_pb2.AuditEntry.FromString(rows[0][1]) if rows else audit_pb2.AuditEntry()
        if entry.verdict.request_id != request_id or entry.caller != caller.name:
            raise AuditError(f"audit entry {index} is not the verdict of request {request_id!r}")
        note = verdict.audit.checkpoint
        checkpoint = self.audit.read_checkpoint(note)
        try:
            merkle.verify_inclusion(
                merkle.leaf_hash(rows[0][1]),
                index,
                checkpoint.size,
                self.audit.store.inclusion_proof(index, checkpoint.size),
                checkpoint.root,
            )
            proven = True
        except VerificationError:
            log.error("request=%s: its audit entry %d is not proven in the log", request_id, index)
            proven = False
        return ReportSource(verdict, entry, index, note, checkpoint, proven)

    def check_consent(self, app: Application) -> None:
        """Refuse a consent that is no longer in force on the check date (nothing is logged)."""
        consent.check_in_force(app.consent, self.policy.regions[app.region], self.now().date())

    def bind_case(self, app: Application, caller: PeerIdentity, pseudonym: bytes) -> None:
        """A case number serves one household (per intake system); a standing authorisation
        covers many."""
        if app.consent.standing:
            return
        key = self.audit_key.mac(f"case\0{caller.name}\0{app.consent.case_number}".encode())
        if not self.requests.bind_case(key, pseudonym):
            raise consent.case_reused(app.consent.case_number)

    def _about(
        self,
        entry: audit_pb2.RequestEntry | audit_pb2.VerdictEntry,
        app: Application,
        audit_token: bytes,
    ) -> None:
        """Fill the fields every audit entry about one application carries (never an ID)."""
        entry.request_id = app.request_id
        entry.program = app.program
        entry.region = app.region
        entry.consent_reference = app.consent.case_number
        entry.consent.CopyFrom(app.consent.record(self.audit_key))
        entry.applicant_audit_token = audit_token
        entry.as_of = app.as_of.isoformat()
        entry.caseworker_id = app.caseworker_id

    def request_entry(
        self, app: Application, caller: PeerIdentity, audit_token: bytes, query_id: str
    ) -> audit_pb2.AuditEntry:
        entry = self.entry_for(caller)
        self._about(entry.request, app, audit_token)
        entry.request.query_id = query_id
        return entry

    def evidence(self, leaves: Sequence[int]) -> EvidenceSource:
        """What proves to the custodian that these request entries are in the log."""
        return log_evidence(self.audit, leaves)

    def unfinished_entry(
        self, app: Application, caller: PeerIdentity, audit_token: bytes, query_id: str, error: str
    ) -> audit_pb2.AuditEntry:
        """The outcome of a request that reached no verdict, and why."""
        entry = self.entry_for(caller)
        entry.verdict.CopyFrom(audit_pb2.VerdictEntry(query_id=query_id, error=error))
        self._about(entry.verdict, app, audit_token)
        return entry

    def _verify(
        self, app: Application, caller: PeerIdentity, request_key: bytes
    ) -> tuple[verification_pb2.Verdict, GrantedHousehold]:
        audit_token = self.applicant_token(app)
        who = app.resident
        query_id = self.new_query_id()
        self.requests.begin([(request_key, query_id, self.audit.store.size())])
        (logged,) = self.audit.append([self.request_entry(app, caller, audit_token, query_id)])
        try:  # from here on, every way out leaves an outcome entry for the request entry
            household, grant = self.registry.household(
                who if isinstance(who, ResidentId) else who.handle,
                query_id,
                app.consent.signatures_pb(),
                app.monitor_until,
            )
            self.bind_case(app, caller, household.pseudonym)
            fan = self.pool.query(query_id, household.tokens, grant)
            claimed = aggregate(self.custodian.public_key, fan.answers)
            totals = self.custodian.decrypt_totals(
                query_id, fan.answers, claimed, grant, self.evidence([logged.leaf_index])
            )
            digests = [
                (a.connector_id, a.digest(query_id, self.pool.layout_digest(a.connector_id)))
                for a in fan.answers
            ]
            verdict, entry = self.conclude(
                app, caller, audit_token, query_id, household, fan.failures, digests, totals
            )
            self.requests.pending([(request_key, verdict.SerializeToString(deterministic=True))])
        except ServiceError as e:
            self.audit.append([self.unfinished_entry(app, caller, audit_token, query_id, str(e))])
            raise
        (receipt,) = self.audit.append([entry])
        verdict.audit.CopyFrom(receipt_pb(receipt))
        log.info(
            "verified request=%s query=%s decision=%s answered=%d failed=%s leaf=%d",
            app.request_id,
            query_id,
            common_pb2.Decision.Name(verdict.decision),
            len(fan.answers),
            ",".join(sorted(fan.failures)) or "-",
            receipt.leaf_index,
        )
        return verdict, household

    def conclude(
        self,
        app: Application,
        caller: PeerIdentity,
        audit_token: bytes,
        query_id: str,
        household: GrantedHousehold,
        failures: Mapping[str, str],
        digests: Sequence[tuple[str, bytes]],
        totals: Totals,
    ) -> tuple[verification_pb2.Verdict, audit_pb2.AuditEntry]:
        """From decrypted totals to the verdict and its audit entry (both paths end here)."""
        missing: dict[str, set[str]] = {}
        for cid in failures:
            declared = self.pool.declared(cid)
            for name in declared.fields if declared else kind_of(cid).field_names:
                missing.setdefault(name, set()).add(cid)
        for name, reason in totals.refused.items():
            missing.setdefault(name, set()).add(f"key custodian: {reason}")
        members = household.members
        facts = HouseholdFacts(
            members=tuple(members),
            totals=totals.values,
            missing={k: tuple(sorted(v)) for k, v in missing.items()},
        )
        applied = self.policy.apply(app.program, app.region, facts, app.as_of)
        ev = applied.evaluation
        verdict = verification_pb2.Verdict(
            request_id=app.request_id,
            decision=_DECISIONS[ev.decision],
            benefit_fen=ev.benefit_fen,
            household_size=facts.size,
            policy_version=applied.policy_version,
            rules=[_rule_pb(r) for r in ev.rules],
            program=app.program,
            region=app.region,
            as_of=app.as_of.isoformat(),
            connectors_answered=len(digests),
            failures=[
                common_pb2.SourceFailure(connector_id=c, reason=r)
                for c, r in sorted(failures.items())
            ],
            figures_opening=self.new_salt(),
            members=household_members(members, app),
        )
        entry = self.entry_for(caller)
        entry.verdict.CopyFrom(
            audit_pb2.VerdictEntry(
                connectors_answered=sorted(c for c, _ in digests),
                connectors_failed=list(verdict.failures),
                answer_digests=[
                    audit_pb2.AnswerDigest(connector_id=c, digest=d) for c, d in sorted(digests)
                ],
                decision=verdict.decision,
                # no figure: a threshold of the policy only, the rest in the commitment
                rules=[
                    audit_pb2.RuleRecord(
                        id=r.id,
                        outcome=_OUTCOMES[r.outcome],
                        threshold=None if r.threshold_fields else r.threshold,
                    )
                    for r in ev.rules
                ],
                policy_version=applied.policy_version,
                household_size=facts.size,
                query_id=query_id,
                figures_commitment=commitment.commit(verdict.figures_opening, verdict),
                district=household.district,
            )
        )
        self._about(entry.verdict, app, audit_token)
        return verdict, entry


def _rule_pb(r: RuleResult) -> verification_pb2.RuleOutcome:
    return verification_pb2.RuleOutcome(
        id=r.id,
        outcome=_OUTCOMES[r.outcome],
        value=r.value,
        threshold=r.threshold,
        comparison=r.comparison,
        unit=r.unit,
        message_zh=r.message_zh,
        message_en=r.message_en,
        missing_sources=list(r.missing_sources),
        figures=[
            verification_pb2.Figure(
                name=f.name,
                value=f.value,
                comparison=f.comparison,
                threshold=f.threshold,
                unit=f.unit,
            )
            for f in r.figures
        ],
        references=list(r.references),
        title_zh=r.title_zh,
        title_en=r.title_en,
    )


def household_members(
    members: Sequence[Member], app: Application
) -> list[verification_pb2.HouseholdMember]:
    """The household for the caseworker's report: relation, year of birth, the applicant's ID
    masked. Under a signed consent a verdict exists only when every adult signed it (the
    registry gives no tokens otherwise), so an adult's ``signed`` is true."""
    resident = app.resident
    applicant = resident.masked() if isinstance(resident, ResidentId) else ""
    return [
        verification_pb2.HouseholdMember(
            relation=connector_pb2.Relation.Value(m.relation.upper()),
            birth_year=m.birth_date.year,
            applicant=m.applicant,
            signed=not app.consent.standing and is_adult(m.birth_date, app.as_of),
            masked_id=applicant if m.applicant else "",
        )
        for m in members
    ]


def receipt_pb(r: Receipt) -> audit_pb2.AuditReceipt:
    return audit_pb2.AuditReceipt(
        leaf_index=r.leaf_index, checkpoint=r.checkpoint, inclusion_proof=list(r.inclusion_proof)
    )


def batch_error(request_id: str, code: str, message: str) -> verification_pb2.BatchResult:
    return verification_pb2.BatchResult(
        request_id=request_id, error=verification_pb2.BatchError(code=code, message=message)
    )


MAX_CASEWORKER = 64


def _text_ok(value: str) -> bool:
    return 0 < len(value) <= MAX_TEXT and value.isprintable()


class BatchRunner(Protocol):
    def run(
        self, apps: list[Application], caller: PeerIdentity
    ) -> list[verification_pb2.BatchResult]: ...


class VerificationServicer(verification_pb2_grpc.VerificationServiceServicer):
    def __init__(
        self,
        verifier: Verifier,
        batch: BatchRunner,
        today: Callable[[], dt.date],
        chunk: int = 121,
        quotas: Quotas | None = None,
        batch_idle_seconds: float = 60.0,
    ) -> None:
        self._verifier = verifier
        self._batch = batch
        self._today = today
        self._chunk = chunk
        self._quotas = quotas or Quotas(QuotaSettings())
        self._idle = batch_idle_seconds

    def _not_found(self, caller: str) -> None:
        alert = self._quotas.not_found(caller)
        if alert is not None:
            try:
                self._verifier.log_alert(alert)
            except AuditError as e:  # the caller's answer does not wait on it; the operator sees
                log.error("could not log alert %s for %s: %s", alert.kind, alert.subject, e)

    def validate(
        self, request: verification_pb2.VerifyRequest
    ) -> Application | list[tuple[str, str]]:
        """The application, or every field violation of the request."""
        violations: list[tuple[str, str]] = []
        today = self._today()
        resident = None
        try:
            resident = parse_id(request.id_number, today=today)
        except InvalidResidentId as e:
            violations.append(("id_number", f"{e.reason}: {e}"))
        if not _text_ok(request.request_id):
            violations.append(("request_id", f"required, 1 to {MAX_TEXT} printable characters"))
        if request.caseworker_id and not (
            len(request.caseworker_id) <= MAX_CASEWORKER
            and request.caseworker_id.isprintable()
            and "/" not in request.caseworker_id
        ):
            violations.append(
                (
                    "caseworker_id",
                    f"optional, up to {MAX_CASEWORKER} printable characters, without '/'",
                )
            )
        for name in ("request_id", "caseworker_id"):
            if looks_like_id(getattr(request, name)):
                violations.append(
                    (
                        name,
                        "looks like a resident ID number; an ID is sent only as id_number "
                        "(free text is logged)",
                    )
                )
        if request.program not in PROGRAMS:
            violations.append(
                (
                    "program",
                    f"unknown programme {request.program[:40]!r}; known: {', '.join(PROGRAMS)}",
                )
            )
        region = request.region or self._verifier.policy.default_region
        if region not in self._verifier.policy.regions:
            known = ", ".join(sorted(self._verifier.policy.regions))
            violations.append(("region", f"unknown region {region[:40]!r}; known: {known}"))
        signed = consent.parse(request.consent, today)
        if not isinstance(signed, Consent):
            violations += signed
        as_of = today
        if request.as_of:
            try:
                as_of = parse_date(request.as_of)
                if as_of > today:
                    violations.append(("as_of", f"{request.as_of} is in the future"))
            except ValueError:
                violations.append(("as_of", f"{request.as_of[:40]!r} is not a date YYYY-MM-DD"))
        if violations or resident is None or not isinstance(signed, Consent):
            return violations or [("id_number", "invalid")]
        return Application(
            request.request_id,
            resident,
            request.program,
            region,
            signed,
            as_of,
            request.as_of,
            request.caseworker_id,
        )

    def _application(
        self, request: verification_pb2.VerifyRequest, context: grpc.ServicerContext
    ) -> Application:
        app = self.validate(request)
        if isinstance(app, Application):
            return app
        detail = rpc.bad_request(*app[0])
        for f, d in app[1:]:
            detail.field_violations.add(field=f, description=d)
        rpc.abort(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid request: " + "; ".join(f"{f}: {d}" for f, d in app),
            detail,
        )

    def VerifyBatch(
        self,
        request_iterator: Iterator[verification_pb2.VerifyRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[verification_pb2.BatchResult]:
        """Read applications, verify them a chunk at a time, stream the results back."""
        caller = rpc.caller(context)
        chunk: list[Application] = []
        try:
            for request in paced(request_iterator, min(2.0, self._idle / 2), self._idle):
                if request is PAUSE:  # the client paused: answer what it sent so far
                    if chunk:
                        yield from self._counted(self._batch.run(chunk, caller), caller.name)
                        chunk = []
                    continue
                app = self.validate(request)
                if not isinstance(app, Application):
                    yield batch_error(
                        request.request_id,
                        "INVALID_ARGUMENT",
                        "; ".join(f"{f}: {d}" for f, d in app),
                    )
                    continue
                try:
                    self._quotas.charge(caller.name)
                except QuotaExceeded as e:
                    metrics.QUOTA_REFUSALS.labels("caller").inc()
                    yield batch_error(request.request_id, "RESOURCE_EXHAUSTED", str(e))
                    continue
                chunk.append(app)
                if len(chunk) >= self._chunk:
                    yield from self._counted(self._batch.run(chunk, caller), caller.name)
                    chunk = []
        except StreamIdle as e:
            rpc.abort(context, grpc.StatusCode.ABORTED, str(e))
        if chunk:
            yield from self._counted(self._batch.run(chunk, caller), caller.name)

    def _counted(
        self, results: Iterable[verification_pb2.BatchResult], caller: str
    ) -> Iterator[verification_pb2.BatchResult]:
        for r in results:
            if r.HasField("error") and r.error.code == "NOT_FOUND":
                self._not_found(caller)
            yield r

    def Verify(
        self, request: verification_pb2.VerifyRequest, context: grpc.ServicerContext
    ) -> verification_pb2.Verdict:
        app = self._application(request, context)
        caller = rpc.caller(context)
        try:
            self._quotas.charge(caller.name)
        except QuotaExceeded as e:
            metrics.QUOTA_REFUSALS.labels("caller").inc()
            rpc.abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                str(e),
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(
                            subject=e.subject, description=str(e)
                        )
                    ]
                ),
            )
        return self.guarded(context, app, caller, lambda: self._verifier.verify(app, caller))

    def GetReport(
        self, request: verification_pb2.ReportRequest, context: grpc.ServicerContext
    ) -> verification_pb2.Report:
        caller = rpc.caller(context)
        lang = request.lang or "zh"
        if not request.request_id:
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "request_id is required",
                rpc.bad_request("request_id", "the request id the verification was made with"),
            )
        if lang not in LANGS:
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown report language {lang!r}",
                rpc.bad_request("lang", f"one of {', '.join(LANGS)}"),
            )
        pdf = request.format == verification_pb2.PDF
        try:
            source = self._verifier.report_source(request.request_id, caller)
            html = render_html(source, lang, DEPLOYMENT, self._verifier.now())
            document = render_pdf(html) if pdf else html.encode()
        except ReportNotFound as e:
            rpc.abort(context, grpc.StatusCode.NOT_FOUND, str(e))
        except ReportNotReady as e:
            rpc.abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                str(e),
                rpc.precondition_failure("IN_PROGRESS", request.request_id, str(e)),
            )
        except PdfUnavailable as e:
            rpc.abort(context, grpc.StatusCode.UNAVAILABLE, str(e))
        except (AuditError, StateUnavailable) as e:
            log.error("report of request=%s: %s: %s", request.request_id, type(e).__name__, e)
            rpc.abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "the verdict or its audit entry cannot be read now; the operator must look at "
                "the service's log",
            )
        safe_id = re.sub(r"[^A-Za-z0-9._-]", "_", request.request_id)
        return verification_pb2.Report(
            document=document,
            media_type="application/pdf" if pdf else "text/html; charset=utf-8",
            filename=f"report-{safe_id}.{'pdf' if pdf else 'html'}",
            verdict=source.verdict,
        )

    def guarded(
        self,
        context: grpc.ServicerContext,
        app: Application,
        caller: PeerIdentity,
        work: Callable[[], T],
    ) -> T:
        """Run a verification (or an enrolment, which is one) and turn its refusals into
        status codes with their details."""
        try:
            return work()
        except MonitoringRefused as e:
            rpc.abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                str(e),
                rpc.precondition_failure("MONITORING", "monitoring_handle", str(e)),
            )
        except PolicyError as e:
            rpc.abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                str(e),
                rpc.precondition_failure(
                    "POLICY", f"{app.program}/{app.region}/{app.as_of}", str(e)
                ),
            )
        except ConsentRefused as e:
            rpc.abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                e.detail,
                error_details_pb2.PreconditionFailure(
                    violations=[
                        error_details_pb2.PreconditionFailure.Violation(
                            type="CONSENT", subject=subject, description=description
                        )
                        for subject, description in e.violations
                    ]
                ),
            )
        except RequestConflict as e:
            rpc.abort(context, grpc.StatusCode.ALREADY_EXISTS, str(e))
        except RequestInProgress as e:
            rpc.abort(context, grpc.StatusCode.ABORTED, str(e))
        except RequestExpired as e:
            rpc.abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                str(e),
                rpc.precondition_failure("RETENTION", app.request_id, str(e)),
            )
        except RegistryNotFound as e:
            self._not_found(caller.name)
            rpc.abort(context, grpc.StatusCode.NOT_FOUND, str(e))
        except SourceUnavailable as e:
            rpc.abort(context, grpc.StatusCode.UNAVAILABLE, str(e))
        except (AuditError, CustodianRefused, StateUnavailable) as e:
            log.error("request=%s failed: %s: %s", app.request_id, type(e).__name__, e)
            # the custodian's reasons are its own words (no ID, no figure); storage errors are not
            what = (
                f"the key custodian refused: {e}"
                if isinstance(e, CustodianRefused)
                else "the service's state database is not available"
                if isinstance(e, StateUnavailable)
                else "the audit log is not available"
            )
            rpc.abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                f"the verification could not be completed: {what}; nothing was decided, retry later",
            )

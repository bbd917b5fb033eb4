"""The gRPC edge of verification: requests in, applications to the one pipeline
(:mod:`hedui.server.verifier`), verdicts and statuses out.

``Verify`` charges the caller's interactive rate and quota and joins concurrent calls in one
pipeline run (:mod:`hedui.server.gather`); ``VerifyBatch`` is a campaign: flow-controlled by its
stream, charged against the caller's campaign budget, run a chunk at a time. A refusal becomes
the same status on both (:mod:`hedui.server.status`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import grpc
from google.rpc import code_pb2, status_pb2

from hedui.audit.errors import AuditError
from hedui.core import metrics, rpc
from hedui.core.clock import DEPLOYMENT, parse_date
from hedui.core.errors import InvalidResidentId
from hedui.core.policy.book import PROGRAMS
from hedui.core.resident_id import CASEWORKER_ID, REQUEST_ID
from hedui.core.resident_id import parse as parse_id
from hedui.core.tls import PeerIdentity
from hedui.proto.v1 import verification_pb2, verification_pb2_grpc
from hedui.server import consent
from hedui.server.application import Application
from hedui.server.consent import CampaignRefused, Consent
from hedui.server.disclosure import NONE as NO_SETTING
from hedui.server.disclosure import Disclosure
from hedui.server.errors import PolicyError, RegistryNotFound, ServiceError
from hedui.server.gather import Gatherer
from hedui.server.monitor import MonitoringError
from hedui.server.quotas import QuotaExceeded, Quotas, QuotaSettings
from hedui.server.report import (
    LANGS,
    PdfUnavailable,
    ReportNotFound,
    ReportNotReady,
    render_html,
    render_pdf,
)
from hedui.server.requests import StateUnavailable
from hedui.server.status import invalid, status_of
from hedui.server.streams import PAUSE, StreamIdle, paced
from hedui.server.verifier import Outcome, Verifier

T = TypeVar("T")
log = logging.getLogger("hedui.server")

MAX_TEXT = REQUEST_ID.max_chars
MAX_CASEWORKER = CASEWORKER_ID.max_chars
CHUNKS_IN_FLIGHT = 2  # per campaign stream


def batch_result(request_id: str, status: status_pb2.Status) -> verification_pb2.BatchResult:
    """A refused application's result: the status, and its code's name and message for
    clients of the earlier contract."""
    return verification_pb2.BatchResult(
        request_id=request_id,
        error=verification_pb2.BatchError(
            code=code_pb2.Code.Name(status.code), message=status.message
        ),
        status=verification_pb2.Status.FromString(status.SerializeToString()),
    )


class VerificationServicer(verification_pb2_grpc.VerificationServiceServicer):
    def __init__(
        self,
        verifier: Verifier,
        today: Callable[[], dt.date],
        chunk: int = 121,
        quotas: Quotas | None = None,
        batch_idle_seconds: float = 60.0,
        gather_max_households: int = 32,
        gather_window_ms: float = 10.0,
        disclosure: Disclosure = NO_SETTING,
    ) -> None:
        self._verifier = verifier
        self.disclosure = disclosure
        self._today = today
        self._chunk = chunk
        self._quotas = quotas or Quotas(QuotaSettings())
        self._idle = batch_idle_seconds
        self._gather_max, self._gather_window = gather_max_households, gather_window_ms / 1000
        # one gatherer per intake system: a run holds one caller's applications only, so no
        # household of another intake can change or fail its verdicts
        self._gatherers: dict[str, Gatherer[tuple[Application, PeerIdentity], Outcome]] = {}
        self._gatherers_lock = threading.Lock()
        # the campaigns' chunks in flight (two streams, CHUNKS_IN_FLIGHT each)
        self._chunks = ThreadPoolExecutor(2 * CHUNKS_IN_FLIGHT, thread_name_prefix="chunk")

    def _gatherer(self, caller: str) -> Gatherer[tuple[Application, PeerIdentity], Outcome]:
        with self._gatherers_lock:
            g = self._gatherers.get(caller)
            if g is None:
                g = Gatherer(
                    self._verifier.run, max_households=self._gather_max, window=self._gather_window
                )
                self._gatherers[caller] = g
            return g

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
        # free text is logged: a documented character set, and never an ID however written
        for name, kind in (("request_id", REQUEST_ID), ("caseworker_id", CASEWORKER_ID)):
            problem = kind.problem(getattr(request, name))
            if problem is not None:
                violations.append((name, problem))
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

    # -- Verify -----------------------------------------------------------------------------

    def Verify(
        self, request: verification_pb2.VerifyRequest, context: grpc.ServicerContext
    ) -> verification_pb2.Verdict:
        app = self.validate(request)
        if not isinstance(app, Application):
            rpc.abort_with(context, invalid(app))
        caller = rpc.caller(context)
        try:
            self._quotas.charge(caller.name)
        except QuotaExceeded as e:
            metrics.QUOTA_REFUSALS.labels("caller").inc()
            rpc.abort_with(context, status_of(e, app.request_id))
        return self.guarded(
            context,
            app,
            caller,
            lambda: self.disclosure.shown(
                caller.name, self._checked(self._gatherer(caller.name).submit((app, caller)))[0]
            ),
        )

    @staticmethod
    def _checked(outcome: Outcome) -> tuple[verification_pb2.Verdict, object]:
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def guarded(
        self,
        context: grpc.ServicerContext,
        app: Application,
        caller: PeerIdentity,
        work: Callable[[], T],
    ) -> T:
        """Run a verification (or an enrolment, which is one) and end the call with the status
        of its refusal."""
        try:
            return work()
        except (ServiceError, PolicyError, AuditError) as e:
            if isinstance(e, MonitoringError):
                raise  # the enrolment's own refusal, answered by its caller
            if isinstance(e, RegistryNotFound | CampaignRefused):
                self._not_found(caller.name)
            rpc.abort_with(context, status_of(e, app.request_id, app.policy_subject))

    # -- VerifyBatch ------------------------------------------------------------------------

    def VerifyBatch(
        self,
        request_iterator: Iterator[verification_pb2.VerifyRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[verification_pb2.BatchResult]:
        """A campaign: read applications, verify them a chunk at a time, stream the results
        back as they are decided. Up to ``CHUNKS_IN_FLIGHT`` chunks are verified at once, so
        that one chunk's registry, custodian and service work overlaps another's fan-out; the
        stream is read on only while fewer are in flight (its flow control)."""
        caller = rpc.caller(context)
        chunk: list[Application] = []
        flight: deque[Future[list[verification_pb2.BatchResult]]] = deque()

        def launch(apps: list[Application]) -> Iterator[verification_pb2.BatchResult]:
            """Start a chunk; the results of the chunks done meanwhile, waiting for the oldest
            while too many are in flight."""
            flight.append(self._chunks.submit(self._run_chunk, apps, caller))
            while flight and (flight[0].done() or len(flight) >= CHUNKS_IN_FLIGHT):
                yield from flight.popleft().result()

        try:
            for request in paced(request_iterator, min(2.0, self._idle / 2), self._idle):
                if request is PAUSE:  # the client paused: answer what it sent so far
                    if chunk:
                        yield from launch(chunk)
                        chunk = []
                    while flight:
                        yield from flight.popleft().result()
                    continue
                app = self.validate(request)
                if not isinstance(app, Application):
                    yield batch_result(request.request_id, invalid(app))
                    continue
                # a registered campaign re-checks under its budget; an application with a
                # signed consent, or naming a campaign the registry does not have in force,
                # counts as the interactive ones do
                campaign = app.consent.standing and self._registered(app)
                try:
                    if campaign:
                        self._quotas.charge_campaign(caller.name)
                    else:
                        self._quotas.charge(caller.name)
                except QuotaExceeded as e:
                    metrics.QUOTA_REFUSALS.labels("campaign" if campaign else "caller").inc()
                    yield batch_result(app.request_id, status_of(e, app.request_id))
                    continue
                chunk.append(app)
                if len(chunk) >= self._chunk:
                    yield from launch(chunk)
                    chunk = []
        except StreamIdle as e:
            for f in flight:  # the chunks started are decided and logged; their caller is gone
                f.result()
            rpc.abort(context, grpc.StatusCode.ABORTED, str(e))
        if chunk:
            yield from launch(chunk)
        while flight:
            yield from flight.popleft().result()

    def _registered(self, app: Application) -> bool:
        """Whether the campaign ``app`` names is registered and in force for its programme
        (looked up once and kept for a while: :class:`hedui.server.campaigns.CampaignBook`)."""
        try:
            self._verifier.campaigns.resolve(app, self._today())
        except ServiceError:
            return False
        return True

    def _run_chunk(
        self, apps: Sequence[Application], caller: PeerIdentity
    ) -> list[verification_pb2.BatchResult]:
        outcomes = self._verifier.run([(app, caller) for app in apps])
        out = []
        for app, outcome in zip(apps, outcomes, strict=True):
            if isinstance(outcome, Exception):
                if isinstance(outcome, RegistryNotFound | CampaignRefused):
                    self._not_found(caller.name)
                status = status_of(outcome, app.request_id, app.policy_subject)
                out.append(batch_result(app.request_id, status))
            else:
                shown = self.disclosure.shown(caller.name, outcome[0])
                out.append(verification_pb2.BatchResult(request_id=app.request_id, verdict=shown))
        return out

    # -- GetReport --------------------------------------------------------------------------

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
            source = dataclasses.replace(
                source, verdict=self.disclosure.shown(caller.name, source.verdict)
            )
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

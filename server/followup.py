"""The gRPC edge of 主动发现: ``MonitoringService`` for department connectors (events) and
``FollowUpService`` for caseworkers' systems (enrol, alerts, the monthly report)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator

import grpc

from hedui.audit.errors import AuditError
from hedui.core import metrics, rpc
from hedui.core.clock import parse_date
from hedui.core.policy.monitoring import EVENT_KINDS
from hedui.core.tls import PeerIdentity
from hedui.proto.v1 import monitoring_pb2, monitoring_pb2_grpc, verification_pb2
from hedui.server.alerts import Alert, AlertError, AlertNotFound, AlertWrongState
from hedui.server.application import Application
from hedui.server.errors import ServiceError
from hedui.server.monitor import Monitor, MonitoringError
from hedui.server.requests import StateUnavailable
from hedui.server.status import invalid
from hedui.server.verification import VerificationServicer
from hedui.server.watchlist import IncomingEvent

log = logging.getLogger("hedui.server.monitor")

SLICE = 512  # events matched in one lookup
TOKEN_BYTES = 32
MAX_AMOUNT = 10**13


class MonitoringServicer(monitoring_pb2_grpc.MonitoringServiceServicer):
    def __init__(self, monitor: Monitor, wake: Callable[[], None]) -> None:
        self._monitor = monitor
        self._wake = wake

    def PushEvents(
        self, request_iterator: Iterator[monitoring_pb2.Event], context: grpc.ServicerContext
    ) -> monitoring_pb2.PushSummary:
        caller = rpc.caller(context)
        today = self._monitor.verifier.now().date()
        received, batch = 0, list[IncomingEvent]()
        try:
            for i, e in enumerate(request_iterator):
                problem = self._problem(caller, e, today)
                if problem is not None:
                    self._flush(batch, caller)
                    field, text = problem
                    code = (
                        grpc.StatusCode.PERMISSION_DENIED
                        if field == "kind" and e.kind in EVENT_KINDS
                        else grpc.StatusCode.INVALID_ARGUMENT
                    )
                    rpc.abort(
                        context,
                        code,
                        f"event {i}: {text}; the {i} event(s) before it were received",
                        rpc.bad_request(f"events[{i}].{field}", text),
                    )
                batch.append(
                    IncomingEvent(
                        caller.name,
                        bytes(e.token),
                        e.kind,
                        dt.date.fromisoformat(e.occurred_on),
                        e.amount_fen,
                    )
                )
                received += 1
                if len(batch) >= SLICE:
                    self._flush(batch, caller)
            self._flush(batch, caller)
        except (ServiceError, AuditError) as e:
            log.error("events from %s: %s", caller.name, e)
            rpc.abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "the events could not be recorded; send them again (a repeat is harmless for "
                "amounts, and raises at most a second re-check for the others)",
            )
        return monitoring_pb2.PushSummary(received=received)

    def _flush(self, batch: list[IncomingEvent], caller: PeerIdentity) -> None:
        if not batch:
            return
        queued = self._monitor.push(batch, caller)
        metrics.MONITORING_EVENTS.labels("received").inc(len(batch))
        if queued:
            metrics.MONITORING_EVENTS.labels("queued").inc(queued)
            self._wake()
        batch.clear()

    def _problem(
        self, caller: PeerIdentity, e: monitoring_pb2.Event, today: dt.date
    ) -> tuple[str, str] | None:
        if len(e.token) != TOKEN_BYTES:
            return "token", f"a token is {TOKEN_BYTES} bytes, not {len(e.token)}"
        try:
            self._monitor.check_kind(caller.name, e.kind)
        except (MonitoringError, KeyError) as err:
            return "kind", str(err).strip("'\"")
        try:
            on = parse_date(e.occurred_on)
        except ValueError:
            return "occurred_on", f"{e.occurred_on[:20]!r} is not a date YYYY-MM-DD"
        if on > today:
            return "occurred_on", f"{on.isoformat()} is in the future"
        amount = EVENT_KINDS[e.kind].amount
        if amount and not 0 <= e.amount_fen <= MAX_AMOUNT:
            return "amount_fen", f"a {e.kind} event needs its running total in fen (0 or more)"
        if not amount and e.amount_fen:
            return "amount_fen", f"a {e.kind} event carries no amount"
        return None


def alert_pb(a: Alert, today: dt.date) -> monitoring_pb2.AlertView:
    return monitoring_pb2.AlertView(
        alert_id=a.alert_id,
        watch_id=a.watch_id,
        district=a.district,
        masked_applicant=a.masked,
        program=a.program,
        kind=a.kind,
        event_on=a.event_on.isoformat(),
        raised_on=a.raised_on.isoformat(),
        due_on=a.due_on.isoformat(),
        escalate_on=a.escalate_on.isoformat(),
        decision_before=a.decision_before,
        decision_after=a.decision_after,
        benefit_fen=a.benefit_fen,
        suggest=a.suggest,
        state=a.state,
        level=a.level(today),
        accepted_by=a.accepted_by or "",
        closed_by=a.closed_by or "",
        closed_on=a.closed_on.isoformat() if a.closed_on else "",
        outcome=a.outcome or "",
        note=a.note or "",
        recheck_request_id=a.recheck_request_id,
    )


class FollowUpServicer(monitoring_pb2_grpc.FollowUpServiceServicer):
    def __init__(self, monitor: Monitor, verification: VerificationServicer) -> None:
        self._monitor = monitor
        self._verification = verification

    def _today(self) -> dt.date:
        return self._monitor.verifier.now().date()

    def _view(
        self, a: Alert, today: dt.date, context: grpc.ServicerContext
    ) -> monitoring_pb2.AlertView:
        """An alert as the caller may see it: no benefit for a ``decision_only`` intake."""
        view = alert_pb(a, today)
        if self._verification.disclosure.of(rpc.caller(context).name):
            view.benefit_fen = 0
        return view

    def Enrol(
        self, request: monitoring_pb2.EnrolRequest, context: grpc.ServicerContext
    ) -> monitoring_pb2.Enrolment:
        app = self._verification.validate(
            verification_pb2.VerifyRequest(
                request_id=request.request_id,
                id_number=request.id_number,
                program=request.program,
                region=request.region,
                consent=request.consent,
                caseworker_id=request.caseworker_id,
            )
        )
        violations = [] if isinstance(app, Application) else list(app)
        until = None
        try:
            until = parse_date(request.until)
        except ValueError:
            violations.append(("until", f"{request.until[:20]!r} is not a date YYYY-MM-DD"))
        if violations or not isinstance(app, Application) or until is None:
            rpc.abort_with(context, invalid(violations))
        caller = rpc.caller(context)

        def enrol() -> monitoring_pb2.Enrolment:
            watch, baseline = self._monitor.enrol(app, caller, until)
            return monitoring_pb2.Enrolment(
                watch_id=watch.watch_id,
                masked_applicant=watch.masked,
                district=watch.district,
                until=watch.until.isoformat(),
                baseline=self._verification.disclosure.shown(caller.name, baseline),
            )

        try:
            return self._verification.guarded(context, app, caller, enrol)
        except MonitoringError as e:
            rpc.abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                str(e),
                rpc.precondition_failure("MONITORING", "until", str(e)),
            )

    def _alerts(self, context: grpc.ServicerContext, work: Callable[[], Alert]) -> Alert:
        try:
            return work()
        except AlertNotFound as e:
            rpc.abort(context, grpc.StatusCode.NOT_FOUND, str(e))
        except AlertWrongState as e:
            rpc.abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                str(e),
                rpc.precondition_failure("STATE", "alert_id", str(e)),
            )
        except AlertError as e:
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                str(e),
                rpc.bad_request(getattr(e, "field", "alert"), str(e)),
            )
        except (StateUnavailable, AuditError) as e:
            log.error("alert step failed: %s", e)
            rpc.abort(
                context, grpc.StatusCode.UNAVAILABLE, "the alert store is not available; retry"
            )

    def ListAlerts(
        self, request: monitoring_pb2.ListAlertsRequest, context: grpc.ServicerContext
    ) -> monitoring_pb2.ListAlertsResponse:
        try:
            found = (
                self._monitor.alerts.overdue()
                if request.overdue
                else self._monitor.alerts.find(
                    district=request.district or None, state=request.state or None
                )
            )
        except AlertError as e:
            rpc.abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(e))
        if request.overdue and request.district:
            found = [a for a in found if a.district == request.district]
        today = self._today()
        return monitoring_pb2.ListAlertsResponse(
            alerts=[self._view(a, today, context) for a in found]
        )

    def GetAlert(
        self, request: monitoring_pb2.AlertRequest, context: grpc.ServicerContext
    ) -> monitoring_pb2.AlertView:
        a = self._alerts(context, lambda: self._monitor.alerts.get(request.alert_id))
        return self._view(a, self._today(), context)

    def AcceptAlert(
        self, request: monitoring_pb2.AlertRequest, context: grpc.ServicerContext
    ) -> monitoring_pb2.AlertView:
        caller = rpc.caller(context)
        a = self._alerts(
            context,
            lambda: self._monitor.accept(request.alert_id, caller, request.caseworker_id),
        )
        return self._view(a, self._today(), context)

    def CloseAlert(
        self, request: monitoring_pb2.CloseAlertRequest, context: grpc.ServicerContext
    ) -> monitoring_pb2.AlertView:
        caller = rpc.caller(context)
        a = self._alerts(
            context,
            lambda: self._monitor.close(
                request.alert_id, caller, request.caseworker_id, request.outcome, request.note
            ),
        )
        return self._view(a, self._today(), context)

    def MonthlyReport(
        self, request: monitoring_pb2.MonthlyReportRequest, context: grpc.ServicerContext
    ) -> monitoring_pb2.MonthlyReportResponse:
        try:
            rows = self._monitor.alerts.report(request.month)
        except AlertError as e:
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                str(e),
                rpc.bad_request("month", "YYYY-MM"),
            )
        return monitoring_pb2.MonthlyReportResponse(
            month=request.month,
            districts=[
                monitoring_pb2.DistrictMonth(
                    district=r.district,
                    raised=r.raised,
                    closed_in_time=r.closed_in_time,
                    closed_late=r.closed_late,
                    overdue=r.overdue,
                    outcomes=r.outcomes,
                )
                for r in rows
            ],
        )

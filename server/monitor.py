"""主动发现, the loop: enrol a household, match departments' events, re-check, raise alerts, and
log every step (never a figure, never an ID number).

- **Enrol**: a verification under the standing authorisation, on the real path, asking the
  registry for a monitoring handle; the household's padded tokens at the departments whose
  events matter go to the watch-list (:mod:`hedui.server.watchlist`).
- **Events**: a department's events are matched by token in one lookup; the others are dropped.
  A matched event is queued and logged ("event").
- **Re-check**: a worker takes queued events and verifies the household again from its handle
  (fan-out, custodian, audit, exactly as a Verify); the request id is the event's, so a crash
  mid-way re-answers the same verification. An alert is raised when the policy says always, or
  when the decision changed; it goes to the household's district with the policy's deadline.
- **Follow-up**: accept and close by a caseworker; an alert that passes its deadline (and later
  its escalation date) is logged once per level.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import threading
from collections.abc import Mapping, Sequence

from hedui.audit.errors import AuditError
from hedui.core.deployment import kind_of
from hedui.core.policy.monitoring import MonitoringRules
from hedui.core.tls import PeerIdentity
from hedui.proto.v1 import audit_pb2, common_pb2, verification_pb2
from hedui.server import consent
from hedui.server.alerts import Alert, AlertBook, NewAlert
from hedui.server.application import Application, Monitored
from hedui.server.consent import Consent, ConsentRefused
from hedui.server.errors import MonitoringRefused, PolicyError, ServiceError
from hedui.server.registry_client import GrantedHousehold
from hedui.server.verifier import SELF, Verifier
from hedui.server.watchlist import IncomingEvent, QueuedEvent, Watch, WatchError, WatchList

log = logging.getLogger("hedui.server.monitor")


class MonitoringError(ServiceError):
    """A monitoring step refused: no rules for the region, a bad end date, an event kind the
    connector may not report."""


def _decision(verdict: verification_pb2.Verdict) -> str:
    return common_pb2.Decision.Name(verdict.decision)


class Monitor:
    def __init__(self, verifier: Verifier, watchlist: WatchList, alerts: AlertBook) -> None:
        self.verifier = verifier
        self.watchlist = watchlist
        self.alerts = alerts

    def rules(self, region: str | None = None) -> MonitoringRules:
        region = region or self.verifier.policy.default_region
        found = self.verifier.policy.regions[region].monitoring
        if found is None:
            raise MonitoringError(f"region {region!r} has no [monitoring] rules in its policy")
        return found

    def _log(self, caller: PeerIdentity, watch: Watch, step: str, **fields: str) -> None:
        """A monitoring step in the audit log, about a watched household (never a figure)."""
        entry = self.verifier.entry_for(caller)
        entry.monitoring.CopyFrom(
            audit_pb2.MonitoringEntry(
                step=step,
                watch_id=watch.watch_id,
                applicant_audit_token=watch.applicant_token,
                program=watch.program,
                district=watch.district,
                **fields,
            )
        )
        self.verifier.audit.append([entry])

    # -- enrolment --------------------------------------------------------------------------

    def enrol(
        self, app: Application, caller: PeerIdentity, until: dt.date
    ) -> tuple[Watch, verification_pb2.Verdict]:
        """Watch the applicant's household until ``until`` (a baseline verification first)."""
        rules = self.rules(app.region)
        if not app.consent.standing:
            raise MonitoringError(
                "monitoring needs a registered monitoring campaign (consent.campaign); a case's "
                "signed consent covers that application only"
            )
        today = self.verifier.now().date()
        app = self.verifier.campaigns.resolve(app, today)  # the campaign's end, as registered
        ends = consent.expires_on(app.consent, self.verifier.policy.regions[app.region], today)
        if not today <= until < ends:
            raise MonitoringError(
                f"until must be from {today.isoformat()} to {(ends - dt.timedelta(days=1))}, "
                f"the last day campaign {app.consent.campaign} is in force"
            )
        enrol_key = self.verifier.audit_key.mac(f"enrol\0{caller.name}\0{app.request_id}".encode())
        known = self.watchlist.by_enrol_key(enrol_key)
        verdict, household = self.verifier.check(
            dataclasses.replace(app, monitor_until=until), caller
        )
        if known is not None:
            return known, verdict
        if household is None or not household.handle:
            raise MonitoringError(
                f"request {app.request_id!r} was verified before without enrolling; enrol with "
                "a new request id"
            )
        assert not isinstance(app.resident, Monitored)
        watch = self.watchlist.enrol(
            enrol_key=enrol_key,
            pseudonym=household.pseudonym,
            program=app.program,
            region=app.region,
            district=household.district,
            masked=app.resident.masked(),
            applicant_token=self.verifier.claims.applicant_token(app),
            handle=household.handle,
            consent=_standing(app.consent).SerializeToString(deterministic=True),
            until=until,
            enrolled_by=caller.name,
            decision=_decision(verdict),
            tokens=_watched_tokens(household, rules),
        )
        self._log(
            caller,
            watch,
            "enrolled",
            until=until.isoformat(),
            request_id=app.request_id,
            caseworker_id=app.caseworker_id,
        )
        return watch, verdict

    # -- events -----------------------------------------------------------------------------

    def check_kind(self, connector_id: str, kind: str) -> None:
        """Refuse an event kind this connector's kind may not report."""
        rule = self.rules().rule(kind)
        if rule is None:
            known = ", ".join(sorted(self.rules().events))
            raise MonitoringError(f"event kind {kind!r} is not monitored here; known: {known}")
        if kind_of(connector_id).kind != rule.source:
            raise MonitoringError(
                f"{kind} events are reported by the {rule.source} connector, not by {connector_id}"
            )

    def push(self, events: Sequence[IncomingEvent], caller: PeerIdentity) -> int:
        """Match a slice of one connector's events; the matched are queued and logged."""
        queued = self.watchlist.match(events, self.rules())
        for q in queued:
            self._log(
                caller,
                self.watchlist.get(q.watch_id),
                "event",
                event_kind=q.kind,
                event_on=q.occurred_on.isoformat(),
                request_id=recheck_request_id(q.event_id),
            )
        return len(queued)

    # -- re-check ---------------------------------------------------------------------------

    def recheck(self, q: QueuedEvent) -> Alert | None:
        """Verify the household again and raise the alert the policy asks for."""
        watch = self.watchlist.get(q.watch_id)
        today = self.verifier.now().date()
        if today > watch.until:
            self.watchlist.finish(q.event_id, None, "the watch ended before the re-check")
            return None
        rules = self.rules(watch.region)
        rule = rules.rule(q.kind)
        signed = consent.parse(_current(verification_pb2.Consent.FromString(watch.consent)), today)
        if not isinstance(signed, Consent):
            raise WatchError(f"watch {watch.watch_id} holds an unusable authorisation")
        request_id = recheck_request_id(q.event_id)
        app = Application(
            request_id,
            Monitored(watch.handle, watch.applicant_token),
            watch.program,
            watch.region,
            signed,
            today,
        )
        verdict, household = self.verifier.check(app, SELF)
        after = _decision(verdict)
        changed = after != watch.decision
        alert = None
        if rule is not None and (rule.alert == "always" or changed):
            alert = self.alerts.raise_alert(
                NewAlert(
                    watch_id=watch.watch_id,
                    district=watch.district,
                    masked=watch.masked,
                    program=watch.program,
                    kind=q.kind,
                    event_on=q.occurred_on,
                    decision_before=watch.decision,
                    decision_after=after,
                    benefit_fen=verdict.benefit_fen,
                    suggest=rule.suggest,
                    recheck_request_id=request_id,
                ),
                rules.deadline_days,
                rules.escalate_after_days,
                alert_id=hashlib.sha256(f"alert\0{q.event_id}".encode()).hexdigest()[:32],
            )
            self._log(
                SELF,
                watch,
                "alert_raised",
                event_kind=q.kind,
                event_on=q.occurred_on.isoformat(),
                alert_id=alert.alert_id,
                request_id=request_id,
            )
        tokens = _watched_tokens(household, rules) if household is not None else None
        self.watchlist.rechecked(watch.watch_id, after, tokens)
        self.watchlist.finish(
            q.event_id,
            alert.alert_id if alert else None,
            "" if alert else "the decision did not change",
        )
        return alert

    def work(self, owner: str, limit: int = 8) -> int:
        """Re-check what is queued (a failed re-check is given back and tried again later)."""
        done = 0
        for q in self.watchlist.take(owner, limit):
            try:
                self.recheck(q)
                done += 1
            except (ConsentRefused, MonitoringRefused, WatchError) as e:
                # not a passing fault: the authorisation no longer covers the household (its
                # campaign ended or is not registered, the registry refused the handle); asked
                # again it would be refused again, and would hold the queue's head for good
                log.warning("re-check of event %d refused for good: %s", q.event_id, e)
                self.watchlist.finish(q.event_id, None, f"not re-checked: {e}"[:500])
                done += 1
            except (ServiceError, PolicyError, AuditError) as e:
                log.warning("re-check of event %d failed, to be retried: %s", q.event_id, e)
                self.watchlist.release(q.event_id)
        return done

    # -- follow-up --------------------------------------------------------------------------

    def _step(self, caller: PeerIdentity, a: Alert, step: str, caseworker: str) -> None:
        self._log(
            caller,
            self.watchlist.get(a.watch_id),
            step,
            event_kind=a.kind,
            alert_id=a.alert_id,
            outcome=a.outcome or "",
            caseworker_id=caseworker,
        )

    def accept(self, alert_id: str, caller: PeerIdentity, caseworker: str) -> Alert:
        a = self.alerts.accept(alert_id, _who(caller, caseworker))
        self._step(caller, a, "alert_accepted", caseworker)
        return a

    def close(
        self, alert_id: str, caller: PeerIdentity, caseworker: str, outcome: str, note: str
    ) -> Alert:
        a = self.alerts.close(alert_id, _who(caller, caseworker), outcome, note)
        self._step(caller, a, "alert_closed", caseworker)
        return a

    def log_levels(self) -> int:
        """Log each alert that went overdue or was escalated since the last look, once."""
        n = 0
        for a, level in self.alerts.levels_to_log():
            step = "alert_overdue" if level == 1 else "alert_escalated"
            self._step(SELF, a, step, "")
            self.alerts.level_logged(a.alert_id, level)
            n += 1
        return n


def recheck_request_id(event_id: int) -> str:
    return f"monitor-event-{event_id}"


def _who(caller: PeerIdentity, caseworker: str) -> str:
    return f"{caller.name}/{caseworker}" if caseworker else caller.name


def _standing(c: Consent) -> verification_pb2.Consent:
    return verification_pb2.Consent(campaign=c.campaign)


def _current(pb: verification_pb2.Consent) -> verification_pb2.Consent:
    """A watch's authorisation as a request names it today: a watch enrolled before campaigns
    were registered holds a "standing" document; it re-checks under the campaign registered
    with that document number (the registry refuses it until the bureau registers one)."""
    if pb.standing and not pb.campaign:
        return verification_pb2.Consent(campaign=pb.case_number)
    return pb


def _watched_tokens(
    household: GrantedHousehold, rules: MonitoringRules
) -> Mapping[str, Sequence[bytes]]:
    """The members' tokens at the connectors whose events the rules name (the registry's
    ``watched`` tokens: never a decoy's, whose events are not the household's; a registry
    older than issue #26 sends none, and then its padded tokens)."""
    sources = {r.source for r in rules.events.values()}
    tokens = household.watched or household.tokens
    return {c: t for c, t in tokens.items() if kind_of(c).kind in sources}


class MonitorWorker:
    """In the service: re-check queued events as they come, log overdue alerts each minute."""

    def __init__(self, monitor: Monitor, owner: str, idle_seconds: float = 2.0) -> None:
        self._monitor, self._owner, self._idle = monitor, owner, idle_seconds
        self._stop = threading.Event()
        self.wake = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="monitor")

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        rounds = 0
        while not self._stop.is_set():
            try:
                busy = self._monitor.work(self._owner)
                if rounds % max(1, int(60 / self._idle)) == 0:
                    self._monitor.log_levels()
            except Exception:  # a database hiccup: next round
                log.exception("monitoring round failed")
                busy = 0
            rounds += 1
            if not busy:
                self.wake.wait(self._idle)
                self.wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()

"""The one verification pipeline, for one application or a campaign's chunk of a thousand:
claim → request entries → registry → grant → fan-out → custodian → rules → verdict entries.

``Verify`` runs it with the applications gathered from concurrent calls (:mod:`gather`),
``VerifyBatch`` with a chunk of its stream, the monitoring re-check with one household named by
its handle. Every application ends with exactly one outcome: its verdict, or the refusal that is
its alone (a household not in the register, a consent refused); a failure of the whole run (the
audit log, the custodian) is every application's. Every request entry gets one outcome entry.
Logs name the request id and the query id only, never an ID number.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from hedui.audit import commitment, merkle
from hedui.audit.errors import AuditError, VerificationError
from hedui.audit.log import AuditLog, Receipt
from hedui.core.custody import EvidenceSource
from hedui.core.grants import Grant
from hedui.core.judgement import Judged
from hedui.core.policy.book import PolicyBook
from hedui.core.tls import PeerIdentity
from hedui.core.tokens import TokenKey
from hedui.proto.v1 import audit_pb2, common_pb2, verification_pb2
from hedui.server import consent
from hedui.server.application import Application, Monitored
from hedui.server.campaigns import CampaignBook
from hedui.server.claims import Claim, Claims, Settled
from hedui.server.consent import ConsentRefused
from hedui.server.custodian_client import Custodian
from hedui.server.errors import CustodianRefused, PolicyError, ServiceError, SourceUnavailable
from hedui.server.evidence import log_evidence
from hedui.server.fanout import ConnectorPool
from hedui.server.quotas import Alert
from hedui.server.registry_client import Asked, GrantedHousehold, RegistryClient
from hedui.server.report import ReportNotFound, ReportNotReady, ReportSource
from hedui.server.requests import RequestBook, StateUnavailable
from hedui.server.status import RequestInProgress, Unfinished
from hedui.server.verdicts import household_members, receipt_pb

SELF = PeerIdentity("hedui-service", "service")  # the service's own entries (alerts)
log = logging.getLogger("hedui.server")

# one application's outcome: its verdict and the household as the registry answered it (None
# for a repeat answered from the stored verdict), or the refusal that is its alone
Checked = tuple[verification_pb2.Verdict, GrantedHousehold | None]
Outcome = Checked | Exception


class _Unsettled(Exception):
    """A run that failed with its request entries possibly logged and their outcomes not: its
    claims stay, for the settler to give each request its outcome from what the log holds."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class _Pending:
    """An application this run holds the claim of."""

    index: int
    app: Application
    caller: PeerIdentity
    claim: Claim


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
        self.claims = Claims(requests, audit, audit_key, now)
        self.campaigns = CampaignBook(lambda number: self.registry.campaign(number))
        # how many runs (or a settling) of this process hold each claim: a claim is idle, and
        # this process's settler may settle it, only at 0. Counted under ``_claiming``, with
        # the claims taken, so a claim is never settled while a run holds it; no I/O is done
        # under it except the claim itself. ``_settling``: one settling at a time.
        self._in_flight: Counter[bytes] = Counter()
        self._claiming = threading.Lock()
        self._settling = threading.Lock()

    # -- the pipeline -----------------------------------------------------------------------

    def check(self, app: Application, caller: PeerIdentity) -> Checked:
        """One application through the pipeline; its refusal raised."""
        (out,) = self.run([(app, caller)])
        if isinstance(out, Exception):
            raise out
        return out

    def run(self, asks: Sequence[tuple[Application, PeerIdentity]]) -> list[Outcome]:
        """Every application's outcome, in order: verified once per (caller, request id); a
        repeat gets the stored verdict."""
        out: list[Outcome | None] = [None] * len(asks)
        admitted = []
        asks = list(asks)
        for i, (app, caller) in enumerate(asks):
            try:  # refused before anything is claimed or logged
                self.policy.check(app.program, app.region, app.as_of)
                app = self.campaigns.resolve(app, self.now().date())
                asks[i] = (app, caller)
                consent.check_in_force(
                    app.consent, self.policy.regions[app.region], self.now().date()
                )
                admitted.append(i)
            except (PolicyError, ConsentRefused, SourceUnavailable) as e:
                out[i] = e
        claims = self._take([asks[i] for i in admitted])
        todo = []
        for i, c in zip(admitted, claims, strict=True):
            if isinstance(c, Claim):
                todo.append(_Pending(i, *asks[i], c))
            else:
                out[i] = c if isinstance(c, Exception) else (c, None)
        try:
            self._run(todo, out)
        finally:
            self._let_go([p.claim.key for p in todo])
        assert all(o is not None for o in out)
        return [o for o in out if o is not None]

    def _take(
        self, asks: Sequence[tuple[Application, PeerIdentity]]
    ) -> list[Claim | verification_pb2.Verdict | Exception]:
        """Claim the requests (see :meth:`Claims.take`), each claim taken marked in flight. A
        request still in progress after a fault of this process (no run holds it) is settled
        first and claimed again, so its retry goes on at once instead of waiting for the
        settler."""
        claims = self._take_marked(asks)
        stuck = [i for i, c in enumerate(claims) if isinstance(c, RequestInProgress)]
        if stuck:
            try:
                settled = any(self.settle(wait=False))
            except (ServiceError, AuditError):
                settled = False
            if settled:
                for i, c in zip(stuck, self._take_marked([asks[i] for i in stuck]), strict=True):
                    claims[i] = c
        return claims

    def _take_marked(
        self, asks: Sequence[tuple[Application, PeerIdentity]]
    ) -> list[Claim | verification_pb2.Verdict | Exception]:
        with self._claiming:
            try:
                claims = self.claims.take(asks)
            except StateUnavailable as e:
                return [e] * len(asks)
            self._in_flight.update(c.key for c in claims if isinstance(c, Claim))
        return claims

    def _let_go(self, keys: Sequence[bytes]) -> None:
        with self._claiming:
            self._in_flight.subtract(keys)
            for key in keys:
                if self._in_flight[key] <= 0:
                    del self._in_flight[key]

    def _run(self, todo: list[_Pending], out: list[Outcome | None]) -> None:
        try:
            groups = self._groups(todo)
        except StateUnavailable as e:
            self.claims.release([p.claim.key for p in todo])
            groups = []
            for p in todo:
                out[p.index] = e
        for group in groups:
            try:
                for p, result in zip(group, self._verify(group), strict=True):
                    out[p.index] = result
            except _Unsettled as u:  # the settler gives each request its outcome
                for p in group:
                    out[p.index] = u.error
            except Exception as e:  # the whole run failed: nothing was decided for any of them
                if not isinstance(e, ServiceError | AuditError):
                    log.exception("a verification run failed")
                    e = Unfinished(type(e).__name__)
                self.claims.release([p.claim.key for p in group])
                for p in group:
                    out[p.index] = e

    def _groups(self, todo: list[_Pending]) -> list[list[_Pending]]:
        """The runs to make: one for all, except that an application whose case number is bound
        already (to its own household or another's) or shared with another of this run goes
        alone, so that a case number of another household is refused before any source is
        asked (in a run with others its household would be in the grant, asked and decrypted
        with them)."""
        if len(todo) < 2:
            return [todo] if todo else []
        keys = {p.index: self.case_key(p.app, p.caller) for p in todo if not p.app.consent.standing}
        if not keys:
            return [todo]
        shared = Counter(keys.values())
        bound = self.requests.bound_cases(sorted(set(keys.values())))
        alone = [
            p
            for p in todo
            if p.index in keys and (keys[p.index] in bound or shared[keys[p.index]] > 1)
        ]
        together = [p for p in todo if p not in alone]
        return ([together] if together else []) + [[p] for p in alone]

    def _verify(self, todo: list[_Pending]) -> list[Outcome]:
        query_id = self.new_query_id()
        self.requests.begin([(p.claim.key, query_id, self.audit.store.size()) for p in todo])
        try:
            logged = self.audit.append([self.request_entry(p, query_id) for p in todo])
        except AuditError as e:  # perhaps logged all the same (a commit whose reply was lost)
            raise self._unsettled(query_id, todo, e) from None
        try:  # from here on, every way out leaves an outcome entry for every request entry
            return self._after_logged(todo, query_id, logged)
        except _Unsettled:
            raise
        except Exception as e:
            if isinstance(e, AuditError):  # the log's writes fail: the settler appends them
                raise self._unsettled(query_id, todo, e) from None
            why = str(e) if isinstance(e, ServiceError) else f"failed: {type(e).__name__}"
            try:
                self.audit.append([self.unfinished_entry(p, query_id, why) for p in todo])
            except AuditError:
                raise self._unsettled(query_id, todo, e) from None
            raise

    def _unsettled(self, query_id: str, todo: list[_Pending], error: Exception) -> _Unsettled:
        log.error(
            "query=%s: %d request(s) without their outcome entry (%s); the settler appends "
            "them once the audit log takes writes",
            query_id,
            len(todo),
            error,
        )
        return _Unsettled(error)

    def _after_logged(
        self, todo: list[_Pending], query_id: str, logged: list[Receipt]
    ) -> list[Outcome]:
        asked = [
            Asked(
                p.app.resident.handle if isinstance(p.app.resident, Monitored) else p.app.resident,
                p.app.consent.signatures_pb(p.app.program),
                p.app.monitor_until,
            )
            for p in todo
        ]
        lookups: list[GrantedHousehold | ServiceError]
        try:
            lookups, grant = self.registry.households(asked, query_id)
        except ServiceError as e:
            lookups, grant = [e] * len(todo), None
        lookups, grant = self.granted_as_asked(todo, lookups, grant, query_id)
        results: dict[int, Outcome] = {}
        outcome_entries: list[audit_pb2.AuditEntry] = []
        found: list[tuple[_Pending, GrantedHousehold, int]] = []
        refused: list[bytes] = []  # claims given back once their outcome entries are logged

        def refuse(p: _Pending, error: ServiceError | PolicyError) -> None:  # its alone
            outcome_entries.append(self.unfinished_entry(p, query_id, str(error)))
            refused.append(p.claim.key)
            results[p.index] = error

        bound = 0
        for p, household, receipt in zip(todo, lookups, logged, strict=True):
            if isinstance(household, ServiceError):
                refuse(p, household)
                continue
            found.append((p, household, receipt.leaf_index))
            try:  # before any source is asked
                self.bind_case(p.app, p.caller, household.pseudonym)
                bound += 1
            except ConsentRefused as e:
                # a case number of another household: it is in the grant, so it is asked with
                # the others (the grant binds the run's tokens), but its totals are not used
                refuse(p, e)
        concluded: list[tuple[_Pending, GrantedHousehold, verification_pb2.Verdict]] = []
        entries: list[audit_pb2.AuditEntry] = []
        answered: int = 0
        failures: Mapping[str, str] = {}
        if bound and grant is not None:
            fan = self.pool.query(
                query_id,
                [hh.tokens for _, hh, _ in found],
                grant,
                [hh.selected for _, hh, _ in found],
            )
            answered, failures = len(fan.answers), fan.failures
            judged = self.custodian.judge(
                query_id,
                fan.answers,
                len(found),
                grant,
                self.evidence([leaf for *_, leaf in found]),
                [hh.composition for _, hh, _ in found],
            )
            layouts = self.pool.layouts
            digests = [
                (a.connector_id, a.digest(query_id, layouts[a.kind].digest())) for a in fan.answers
            ]
            for i, ((p, household, _), j) in enumerate(zip(found, judged, strict=True)):
                if p.index in results:  # refused above
                    continue
                try:  # the sources failed for the run, and those that marked this household
                    verdict, entry = self.conclude(
                        p, query_id, household, fan.failures_of(i), digests, j
                    )
                except (PolicyError, CustodianRefused) as e:  # this household's alone
                    refuse(p, e)
                    continue
                concluded.append((p, household, verdict))
                entries.append(entry)
        self.requests.pending(
            [(p.claim.key, v.SerializeToString(deterministic=True)) for p, _, v in concluded]
        )
        try:
            receipts = self.audit.append(entries + outcome_entries)
        except AuditError as e:  # the verdicts are kept: the settler answers from them
            raise self._unsettled(query_id, todo, e) from None
        self.claims.release(refused)  # they may be asked again at once
        completed = []
        for (p, household, verdict), receipt in zip(concluded, receipts, strict=False):
            verdict.audit.CopyFrom(receipt_pb(receipt))
            completed.append((p.claim.key, verdict.SerializeToString(deterministic=True)))
            results[p.index] = (verdict, household)
        try:
            self.requests.complete_many(completed)
        except StateUnavailable:
            # the verdicts are in the audit log: the callers get them; the settler completes
            # the claims from the verdicts kept before they were logged
            log.error("query=%s: verdicts logged, state not recorded", query_id)
        log.info(
            "verified query=%s households=%d decided=%d answered=%d failed=%s",
            query_id,
            len(todo),
            len(concluded),
            answered,
            ",".join(sorted(failures)) or "-",
        )
        return [results[p.index] for p in todo]

    # -- the steps' parts -------------------------------------------------------------------

    def granted_as_asked(
        self,
        todo: Sequence[_Pending],
        lookups: list[GrantedHousehold | ServiceError],
        grant: Grant | None,
        query_id: str,
    ) -> tuple[list[GrantedHousehold | ServiceError], Grant | None]:
        """The registry's answer, unless its grant binds other applicants than the run asked
        about: then every household's refusal, naming the likely cause (a registry holding
        another audit token key), before any source is asked. The custodian checks the same
        binding against the log; this only words an honest misconfiguration."""
        granted = [
            p.claim.audit_token
            for p, h in zip(todo, lookups, strict=True)
            if isinstance(h, GrantedHousehold)
        ]
        if grant is None or [b.applicant_audit_token for b in grant.bindings] == granted:
            return lookups, grant
        log.error("query=%s: the registry's grant binds other audit tokens", query_id)
        wrong = SourceUnavailable(
            "household registry: its grant names other applicants than were asked; its copy of "
            "the audit token key (service/audit-token.key) is not this service's: copy it again "
            "from the service's key directory"
        )
        return [wrong] * len(todo), None

    def bind_case(self, app: Application, caller: PeerIdentity, pseudonym: bytes) -> None:
        """A case number serves one household (per intake system); a standing authorisation
        covers many."""
        if app.consent.standing:
            return
        if not self.requests.bind_case(self.case_key(app, caller), pseudonym):
            raise consent.case_reused(app.consent.case_number)

    def case_key(self, app: Application, caller: PeerIdentity) -> bytes:
        """A case number's row in the state: an HMAC of its caller and number."""
        return self.audit_key.mac(f"case\0{caller.name}\0{app.consent.case_number}".encode())

    def evidence(self, leaves: Sequence[int]) -> EvidenceSource:
        """What proves to the custodian that these request entries are in the log."""
        return log_evidence(self.audit, leaves)

    def conclude(
        self,
        p: _Pending,
        query_id: str,
        household: GrantedHousehold,
        failures: Mapping[str, str],
        digests: Sequence[tuple[str, bytes]],
        judged: Judged,
    ) -> tuple[verification_pb2.Verdict, audit_pb2.AuditEntry]:
        """From the custodian's signed judgement to the verdict and its audit entry: the
        decision, benefit and rules are the custodian's, relayed as it signed them, and the
        entry holds its signed record (an auditor checks the one against the other)."""
        app = p.app
        r, st = judged.record, judged.statement
        asked = (app.request_id, p.claim.audit_token, app.program, app.region)
        if (r.request_id, r.applicant_audit_token, r.program, r.region) != asked or (
            r.as_of != app.as_of.isoformat()
        ):
            raise CustodianRefused("the key custodian judged another request")
        if r.refused or st is None:
            raise PolicyError(r.refused or "the key custodian decided nothing")
        verdict = verification_pb2.Verdict(
            request_id=app.request_id,
            decision=st.decision,
            benefit_fen=st.benefit_fen,
            household_size=st.household_size,
            policy_version=st.policy_version,
            rules=st.rules,
            program=app.program,
            region=app.region,
            as_of=app.as_of.isoformat(),
            connectors_answered=len(digests),
            failures=[
                common_pb2.SourceFailure(connector_id=c, reason=why)
                for c, why in sorted(failures.items())
            ],
            figures_opening=self.new_salt(),
            members=household_members(household.members, app),
            judgement=judged.judgement,
        )
        entry = self.entry_for(p.caller)
        entry.verdict.CopyFrom(
            audit_pb2.VerdictEntry(
                connectors_answered=sorted(c for c, _ in digests),
                connectors_failed=list(verdict.failures),
                answer_digests=[
                    audit_pb2.AnswerDigest(connector_id=c, digest=d) for c, d in sorted(digests)
                ],
                decision=r.decision,
                # no figure: a threshold of the policy only, the rest in the commitment
                rules=r.rules,
                policy_version=r.policy_version,
                household_size=r.household_size,
                query_id=query_id,
                figures_commitment=commitment.commit(verdict.figures_opening, verdict),
                district=household.district,
                judgement_record=judged.judgement.record,
                judgement_signature=judged.judgement.signature,
            )
        )
        self._about(entry.verdict, app, p.claim.audit_token)
        return verdict, entry

    # -- audit entries ----------------------------------------------------------------------

    def entry_for(self, caller: PeerIdentity) -> audit_pb2.AuditEntry:
        return audit_pb2.AuditEntry(
            time_unix_ms=int(self.now().timestamp() * 1000),
            caller=caller.name,
            caller_role=caller.role,
        )

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

    def request_entry(self, p: _Pending, query_id: str) -> audit_pb2.AuditEntry:
        entry = self.entry_for(p.caller)
        self._about(entry.request, p.app, p.claim.audit_token)
        entry.request.query_id = query_id
        return entry

    def unfinished_entry(self, p: _Pending, query_id: str, error: str) -> audit_pb2.AuditEntry:
        """The outcome of a request that reached no verdict, and why."""
        entry = self.entry_for(p.caller)
        entry.verdict.CopyFrom(audit_pb2.VerdictEntry(query_id=query_id, error=error))
        self._about(entry.verdict, p.app, p.claim.audit_token)
        return entry

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

    # -- after the verdict ------------------------------------------------------------------

    def settle(self, *, wait: bool = True) -> Settled:
        """Settle the claims a stopped process left in progress, and this process's own that
        no run holds after a fault (see :meth:`Claims.settle`). ``wait=False``: nothing when
        another settling is under way (a caller's retry does not queue behind the settler)."""
        if not self._settling.acquire(blocking=wait):
            return Settled(0, 0, 0)
        try:
            # read and marked at once: no run holds an idle claim, so none can release it and
            # none can claim it again until it is settled (a claim's only I/O under the lock)
            with self._claiming:
                own = self.requests.own_claims()
                idle = [c for c in own if not self._in_flight[c.request_key]]
                self._in_flight.update(c.request_key for c in idle)
            try:
                return self.claims.settle(idle)
            finally:
                self._let_go([c.request_key for c in idle])
        finally:
            self._settling.release()

    def report_source(self, request_id: str, caller: PeerIdentity) -> ReportSource:
        """What the report of ``caller``'s request is made from: the kept verdict, its audit
        entry, and the signed checkpoint of its receipt with the entry's proof checked."""
        known, kept = self.requests.lookup(self.claims.key(caller, request_id))
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

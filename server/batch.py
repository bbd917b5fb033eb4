"""The batch path (半年复核): many applications, one QueryBatch per connector.

Each chunk of applications is claimed (idempotency: an application already verified returns its
stored verdict and is not checked again), its request entries are appended in one batch, the
registry is asked for every household, every connector answers every household in one call with
several households packed per ciphertext, the custodian decrypts kind by kind, and the verdict
entries are appended in one batch under one checkpoint.
"""

from __future__ import annotations

import logging

from hedui.audit.log import Receipt
from hedui.core.tls import PeerIdentity
from hedui.proto.v1 import audit_pb2, verification_pb2
from hedui.server.consent import ConsentRefused
from hedui.server.errors import PolicyError, ServiceError
from hedui.server.fanout import GrantedHousehold, RegistryNotFound
from hedui.server.requests import StateUnavailable, is_purged
from hedui.server.verification import (
    Application,
    Verifier,
    batch_error,
    purged_message,
    receipt_pb,
    resident_of,
)

log = logging.getLogger("hedui.server.batch")


class BatchVerifier:
    def __init__(self, verifier: Verifier) -> None:
        self.v = verifier

    def _claim(
        self, apps: list[Application], caller: PeerIdentity
    ) -> tuple[list[verification_pb2.BatchResult], list[tuple[Application, bytes]]]:
        done, ready = [], []
        for app in apps:
            try:
                self.v.policy.check(app.program, app.region, app.as_of)
                self.v.check_consent(app)
                ready.append((app, *self.v.request_keys(app, caller)))
            except ConsentRefused as e:
                done.append(batch_error(app.request_id, "FAILED_PRECONDITION", e.detail))
            except PolicyError as e:
                done.append(batch_error(app.request_id, "FAILED_PRECONDITION", str(e)))
        todo = []
        claims = self.v.requests.claim_many([(key, fp) for _, key, fp in ready])
        for (app, key, fingerprint), earlier in zip(ready, claims, strict=True):
            if earlier is None:
                todo.append((app, key))
            elif earlier[0] != fingerprint:
                done.append(
                    batch_error(
                        app.request_id,
                        "ALREADY_EXISTS",
                        "request id already used for a different application",
                    )
                )
            elif earlier[1] is None:
                done.append(batch_error(app.request_id, "ABORTED", "being verified; retry shortly"))
            else:
                verdict = verification_pb2.Verdict.FromString(earlier[1])
                if is_purged(verdict):
                    done.append(
                        batch_error(app.request_id, "FAILED_PRECONDITION", purged_message(verdict))
                    )
                    continue
                done.append(
                    verification_pb2.BatchResult(request_id=app.request_id, verdict=verdict)
                )
        return done, todo

    def run(
        self, apps: list[Application], caller: PeerIdentity
    ) -> list[verification_pb2.BatchResult]:
        try:
            results, todo = self._claim(apps, caller)
        except StateUnavailable as e:
            return [batch_error(app.request_id, "UNAVAILABLE", str(e)) for app in apps]
        if not todo:
            return results
        try:
            results += self._verify(todo, caller)
        except Exception as e:
            log.error("batch failed: %s", type(e).__name__)
            for app, key in todo:
                try:
                    self.v.requests.release(key)
                except StateUnavailable:
                    pass  # the next start settles the claim
                results.append(
                    batch_error(
                        app.request_id, "UNAVAILABLE", "the batch could not be completed; retry"
                    )
                )
        return results

    def _verify(
        self, todo: list[tuple[Application, bytes]], caller: PeerIdentity
    ) -> list[verification_pb2.BatchResult]:
        v = self.v
        tokens = {app.request_id: v.applicant_token(app) for app, _ in todo}
        query_id = v.new_query_id()
        size = v.audit.store.size()
        v.requests.begin([(key, query_id, size) for _, key in todo])
        logged = v.audit.append(
            [v.request_entry(app, caller, tokens[app.request_id], query_id) for app, _ in todo]
        )
        try:  # every way out from here leaves an outcome entry for every request entry
            return self._after_logged(todo, caller, tokens, query_id, logged)
        except ServiceError as e:
            v.audit.append(
                [
                    v.unfinished_entry(app, caller, tokens[app.request_id], query_id, str(e))
                    for app, _ in todo
                ]
            )
            raise

    def _after_logged(
        self,
        todo: list[tuple[Application, bytes]],
        caller: PeerIdentity,
        tokens: dict[str, bytes],
        query_id: str,
        logged: list[Receipt],
    ) -> list[verification_pb2.BatchResult]:
        v = self.v
        grant = None
        lookups: list[GrantedHousehold | ServiceError]
        try:
            lookups, grant = v.registry.households(
                [resident_of(app) for app, _ in todo],
                query_id,
                [app.consent.signatures_pb() for app, _ in todo],
            )
        except ServiceError as e:
            lookups = [e] * len(todo)
        results: list[verification_pb2.BatchResult] = []
        outcome_entries: list[audit_pb2.AuditEntry] = []
        found: list[tuple[Application, bytes, GrantedHousehold, int]] = []
        for (app, key), household, receipt in zip(todo, lookups, logged, strict=True):
            if isinstance(household, ServiceError):
                token = tokens[app.request_id]
                outcome_entries.append(
                    v.unfinished_entry(app, caller, token, query_id, str(household))
                )
                v.requests.release(key)
                results.append(batch_error(app.request_id, *_code(household)))
            else:
                found.append((app, key, household, receipt.leaf_index))
        if not found or grant is None:
            v.audit.append(outcome_entries)
            return results
        layouts = v.custodian.batch_layouts
        fan = v.pool.query_batch(query_id, [hh.tokens for _, _, hh, _ in found], layouts, grant)
        per_household = v.custodian.decrypt_batch(
            query_id, fan.answers, len(found), grant, v.evidence([leaf for *_, leaf in found])
        )
        digests = [
            (a.connector_id, a.digest(query_id, layouts[a.kind].digest())) for a in fan.answers
        ]
        verdicts, entries, concluded = [], [], []
        for (app, key, household, _), totals in zip(found, per_household, strict=True):
            try:
                # a case number of another household: it is in the grant, so it was asked with
                # the batch (the grant binds the batch's tokens), but its totals are not used
                v.bind_case(app, caller, household.pseudonym)
                verdict, entry = v.conclude(
                    app,
                    caller,
                    tokens[app.request_id],
                    query_id,
                    household,
                    fan.failures,
                    digests,
                    totals,
                )
            except (PolicyError, ConsentRefused) as e:  # this household's alone
                outcome_entries.append(
                    v.unfinished_entry(app, caller, tokens[app.request_id], query_id, str(e))
                )
                v.requests.release(key)
                results.append(batch_error(app.request_id, *_code(e)))
                continue
            verdicts.append(verdict)
            entries.append(entry)
            concluded.append((app, key))
        v.requests.pending(
            [
                (key, verdict.SerializeToString(deterministic=True))
                for (_, key), verdict in zip(concluded, verdicts, strict=True)
            ]
        )
        receipts = v.audit.append(entries + outcome_entries)
        completed = []
        for (app, key), verdict, receipt in zip(concluded, verdicts, receipts, strict=False):
            verdict.audit.CopyFrom(receipt_pb(receipt))
            completed.append((key, verdict.SerializeToString(deterministic=True)))
            results.append(verification_pb2.BatchResult(request_id=app.request_id, verdict=verdict))
        try:
            v.requests.complete_many(completed)
        except StateUnavailable:  # the verdicts are logged: answer them; the next start settles
            log.error("batch query=%s: verdicts logged, state not recorded", query_id)
        log.info(
            "batch query=%s households=%d answered=%d failed=%s",
            query_id,
            len(found),
            len(fan.answers),
            ",".join(sorted(fan.failures)) or "-",
        )
        return results


def _code(error: ServiceError) -> tuple[str, str]:
    """A household's error as a batch result: (code name, message)."""
    if isinstance(error, RegistryNotFound):
        return "NOT_FOUND", str(error)
    if isinstance(error, ConsentRefused):
        return "FAILED_PRECONDITION", error.detail
    if isinstance(error, PolicyError):
        return "FAILED_PRECONDITION", str(error)
    return "UNAVAILABLE", str(error)

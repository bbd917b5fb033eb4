"""Request claims in one place: one verdict per (caller, request id), for one application or a
campaign's chunk, and the claims a stopped process or a fault left in progress settled from the
audit log.

A request id is claimed before anything is logged; a repeat gets the stored verdict (or a
refusal that says why not); a claim is released when its verification fails, completed with its
verdict, and settled from the log: at start, by the replica that outlives its owner, and by the
settler after a fault of this process (an outcome the log refused, a release the state database
refused).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from google.protobuf.message import DecodeError

from hedui.audit.errors import AuditError
from hedui.audit.log import AuditLog, Receipt
from hedui.core.resident_id import ResidentId
from hedui.core.tls import PeerIdentity
from hedui.core.tokens import TokenKey
from hedui.proto.v1 import audit_pb2, verification_pb2
from hedui.server.application import Application
from hedui.server.requests import (
    Damaged,
    OpenClaim,
    RequestBook,
    StateDamaged,
    StateUnavailable,
    is_purged,
)
from hedui.server.status import RequestConflict, RequestExpired, RequestInProgress
from hedui.server.verdicts import REQUEST_FIELDS, purged_message, receipt_pb

log = logging.getLogger("hedui.server")


class Settled(NamedTuple):
    """What a settling did: requests answered from the log, given an "abandoned" outcome, and
    claims released (never logged, or their failure logged)."""

    answered: int
    abandoned: int
    released: int


@dataclass(frozen=True)
class Claim:
    """A request this process holds: its row key, and the applicant's audit token."""

    key: bytes
    audit_token: bytes


class Claims:
    def __init__(
        self,
        requests: RequestBook,
        audit: AuditLog,
        audit_key: TokenKey,
        now: Callable[[], dt.datetime],
    ) -> None:
        self.requests = requests
        self.audit = audit
        self.audit_key = audit_key
        self.now = now

    def key(self, caller: PeerIdentity, request_id: str) -> bytes:
        """A request's row in the state: an HMAC of its caller and request id."""
        return self.key_of(caller.name, request_id)

    def key_of(self, caller: str, request_id: str) -> bytes:
        return self.audit_key.mac(f"request\0{caller}\0{request_id}".encode())

    def _fingerprint(self, app: Application) -> bytes:
        """An HMAC of the application, so the table holds no ID."""
        who = app.resident
        parts = [
            who.value if isinstance(who, ResidentId) else f"monitored:{who.audit_token.hex()}",
            app.program,
            app.region,
            app.consent.fingerprint(),
            app.as_of_requested,
        ]
        return self.audit_key.mac("\0".join(parts).encode())

    def applicant_token(self, app: Application) -> bytes:
        who = app.resident
        return self.audit_key.token(who) if isinstance(who, ResidentId) else who.audit_token

    def take(
        self, asks: Sequence[tuple[Application, PeerIdentity]]
    ) -> list[Claim | verification_pb2.Verdict | Exception]:
        """Claim every request id, in one transaction: a Claim when it is this process's to
        verify; the stored verdict of a repeat; or why it cannot be verified now."""
        keys = [(self.key(caller, app.request_id), self._fingerprint(app)) for app, caller in asks]
        out: list[Claim | verification_pb2.Verdict | Exception] = []
        earlier = self.requests.claim_many(keys)
        for (app, caller), (key, fingerprint), e in zip(asks, keys, earlier, strict=True):
            if e is None:
                out.append(Claim(key, self.applicant_token(app)))
            elif isinstance(e, Damaged):
                out.append(self._damaged(e, caller, app.request_id))
            elif e[0] != fingerprint:
                out.append(
                    RequestConflict(
                        f"request id {app.request_id!r} was already used for a different "
                        "application"
                    )
                )
            elif e[1] is None:
                out.append(
                    RequestInProgress(
                        f"request {app.request_id!r} is being verified; retry shortly"
                    )
                )
            else:
                try:
                    kept = verification_pb2.Verdict.FromString(e[1])
                except DecodeError:
                    out.append(self._damaged(Damaged(None, None), caller, app.request_id))
                    continue
                out.append(RequestExpired(purged_message(kept)) if is_purged(kept) else kept)
        return out

    def _damaged(self, d: Damaged, caller: PeerIdentity, request_id: str) -> StateDamaged:
        """A kept verdict that cannot be read: DATA_LOSS naming where its outcome is logged."""
        index = self._outcome_index(d, caller.name, request_id)
        where = (
            f"its outcome is audit entry {index} (`hedui audit prove {index}`)"
            if index is not None
            else "its outcome is in the audit log (`hedui audit search`)"
        )
        log.error("request=%s: its kept verdict cannot be read; %s", request_id, where)
        return StateDamaged(
            f"the service's stored verdict of request {request_id!r} is damaged and cannot be "
            f"given again; {where}; the operator must restore the state database"
        )

    def _outcome_index(self, d: Damaged, caller: str, request_id: str) -> int | None:
        """The leaf of a request's outcome entry, searched from where its request was logged."""
        if d.query_id is None or d.from_size is None:
            return None
        try:
            for index, e in self._entries_from(d.from_size):
                if (
                    e.HasField("verdict")
                    and e.verdict.query_id == d.query_id
                    and e.verdict.request_id == request_id
                    and e.caller == caller
                ):
                    return index
        except AuditError:
            return None
        return None

    def _entries_from(self, start: int) -> Iterator[tuple[int, audit_pb2.AuditEntry]]:
        """The log's entries from ``start`` to its stored end (signed or not), a page at a time."""
        store = self.audit.store
        size = store.size()
        for page in range(start, size, 1000):
            for index, data in store.entries(page, min(size, page + 1000)):
                yield index, audit_pb2.AuditEntry.FromString(data)

    def release(self, keys: Sequence[bytes]) -> None:
        """Give claims back after a failure, so their callers may retry at once; one the state
        database cannot release now is released by the settler (see :meth:`settle`)."""
        for key in keys:
            try:
                self.requests.release(key)
            except StateUnavailable:
                log.error("a claim could not be released; the settler releases it")

    def settle(self, own: Sequence[OpenClaim] = ()) -> Settled:
        """Settle the claims left in progress: a previous life's or a dead replica's, and
        ``own``, this process's own that no verification holds after a fault. A request whose
        verdict is in the log is answered from the verdict kept before it was logged; one with
        no outcome gets an "abandoned" outcome entry and may be retried at once; one never
        logged, or whose failure is logged, is released."""
        claims = [*own, *self.requests.open_claims()]
        if not claims:
            return Settled(0, 0, 0)
        store = self.audit.store
        size = store.size()  # every stored entry, signed or not
        begun = {c.query_id for c in claims if c.query_id}
        start = min((c.from_size for c in claims if c.from_size is not None), default=size)
        requests: dict[bytes, audit_pb2.AuditEntry] = {}  # claim key -> its request entry
        outcomes: dict[tuple[str, str, str], int] = {}  # (caller, request id, query id) -> leaf
        failed: set[tuple[str, str, str]] = set()
        for index, e in self._entries_from(start):
            if e.HasField("request") and e.request.query_id in begun:
                requests[self.key_of(e.caller, e.request.request_id)] = e
            elif e.HasField("verdict") and e.verdict.query_id in begun:
                k = (e.caller, e.verdict.request_id, e.verdict.query_id)
                outcomes[k] = index
                if e.verdict.error:
                    failed.add(k)
        abandoned, answer, given_up = [], [], []
        released = 0
        for c in claims:
            request = requests.get(c.request_key)
            if request is None:  # the verification never reached the log
                self.requests.release(c.request_key)
                released += 1
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
                for name in REQUEST_FIELDS:  # the outcome names what its request named
                    setattr(entry.verdict, name, getattr(r, name))
                entry.verdict.consent.CopyFrom(r.consent)
                entry.verdict.error = (
                    "abandoned: the verification stopped before its verdict was logged; retry"
                )
                abandoned.append(entry)
                given_up.append(c.request_key)
                continue
            self.requests.release(c.request_key)
            released += 1
        if abandoned:
            self.audit.append(abandoned)  # its checkpoint covers every earlier entry too
            for key in given_up:  # only once their outcome is logged
                self.requests.release(key)
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
        return Settled(len(answer), len(abandoned), released)

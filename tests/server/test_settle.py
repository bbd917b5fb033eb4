"""Exactly once across crashes: on start, the service settles the claims its previous life left
in progress, from the audit log, and never makes a retry wait for a lease."""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError, OperationalError

from hedui.audit.log import AuditLog
from hedui.audit.store import LogStore, open_log_engine
from hedui.core.resident_id import make
from hedui.core.tls import PeerIdentity
from hedui.core.tokens import audit_token_key
from hedui.proto.v1 import audit_pb2, common_pb2, verification_pb2
from hedui.server.application import Application
from hedui.server.claims import Claim
from hedui.server.consent import Consent
from hedui.server.requests import Damaged, RequestBook, StateDamaged, StateSealer, _is_damage
from hedui.server.status import status_of
from hedui.server.verifier import Verifier

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
INTAKE = PeerIdentity("intake", "intake")


def _verifier(tmp_path: Any) -> Verifier:
    none: Any = None  # the parts settle never touches (registry, connectors, custodian, policy)
    return Verifier(
        registry=none,
        pool=none,
        custodian=none,
        policy=none,
        audit=AuditLog(
            LogStore(open_log_engine("sqlite://")),
            origin="hedui.test/settle",
            signing_key=Ed25519PrivateKey.generate(),
        ),
        audit_key=audit_token_key(bytes(32)),
        requests=RequestBook(f"sqlite:///{tmp_path / 'state.sqlite'}"),
        now=lambda: NOW,
    )


def _request(rid: str, qid: str) -> audit_pb2.AuditEntry:
    return audit_pb2.AuditEntry(
        caller="intake",
        caller_role="intake",
        request=audit_pb2.RequestEntry(request_id=rid, query_id=qid, program="dibao"),
    )


def test_a_crash_leaves_nothing_in_progress_and_no_request_without_an_outcome(tmp_path) -> None:
    v = _verifier(tmp_path)
    book = v.requests
    # 1: the verdict was logged, the process died before recording it
    # 2: the process died after the request entry, before any verdict
    # 3: the process died right after claiming
    k1, k2, k3 = (v.audit_key.mac(f"request\0intake\0r-{i}".encode()) for i in (1, 2, 3))
    for key in (k1, k2, k3):
        assert book.claim(key, b"a" * 32) is None
    book.begin([(k1, "q1", 0), (k2, "q2", 0), (k3, "q3", 0)])
    v.audit.append([_request("r-1", "q1"), _request("r-2", "q2")])  # r-3 never logged
    verdict = verification_pb2.Verdict(request_id="r-1", decision=common_pb2.ELIGIBLE)
    book.pending([(k1, verdict.SerializeToString())])
    (logged,) = v.audit.append(
        [
            audit_pb2.AuditEntry(
                caller="intake",
                verdict=audit_pb2.VerdictEntry(
                    request_id="r-1", query_id="q1", decision=common_pb2.ELIGIBLE
                ),
            )
        ]
    )
    # the next life of the service (another owner) settles what this one left in progress
    v.requests = v.claims.requests = book = RequestBook(f"sqlite:///{tmp_path / 'state.sqlite'}")
    assert v.settle() == (1, 1, 1)  # r-1 answered, r-2 abandoned, r-3 released
    assert book.open_claims() == []
    # the retry of r-1 gets its verdict, with a receipt that proves it in the log
    earlier = book.claim(k1, b"a" * 32)
    assert earlier is not None and earlier[1] is not None
    answer = verification_pb2.Verdict.FromString(earlier[1])
    assert answer.decision == common_pb2.ELIGIBLE and answer.audit.leaf_index == logged.leaf_index
    # r-2 has its "abandoned" outcome, and its retry is ours at once (no lease to wait for)
    entries = [audit_pb2.AuditEntry.FromString(b) for _, b in v.audit.store.entries(0, 10)]
    abandoned = [e for e in entries if e.HasField("verdict") and e.verdict.error]
    assert [(e.verdict.request_id, e.verdict.query_id) for e in abandoned] == [("r-2", "q2")]
    assert "abandoned" in abandoned[0].verdict.error
    assert book.claim(k2, b"a" * 32) is None
    assert book.claim(k3, b"a" * 32) is None


def _claimed(v: Verifier, rid: str, qid: str, *, logged: bool) -> bytes:
    """A claim of this process whose run failed after ``begin`` (its request entry logged or
    not) and whose release failed too: nothing holds it but the state."""
    key = v.audit_key.mac(f"request\0intake\0{rid}".encode())
    assert v.requests.claim(key, b"a" * 32) is None
    v.requests.begin([(key, qid, v.audit.store.size())])
    if logged:
        v.audit.append([_request(rid, qid)])
    return key


def _outcomes(v: Verifier) -> list[tuple[str, str]]:
    size = v.audit.store.size()
    entries = [audit_pb2.AuditEntry.FromString(b) for _, b in v.audit.store.entries(0, size)]
    return [(e.verdict.request_id, e.verdict.error) for e in entries if e.HasField("verdict")]


def test_the_settler_gives_this_process_s_own_idle_claims_their_outcome(tmp_path) -> None:
    v = _verifier(tmp_path)
    # the verdict's append failed (the log refused writes): the verdict was kept, not logged
    k1 = _claimed(v, "r-1", "q1", logged=True)
    v.requests.pending([(k1, verification_pb2.Verdict(request_id="r-1").SerializeToString())])
    # the outcome was logged, the release failed (the state database refused writes)
    k2 = _claimed(v, "r-2", "q2", logged=True)
    v.audit.append(
        [
            audit_pb2.AuditEntry(
                caller="intake",
                verdict=audit_pb2.VerdictEntry(request_id="r-2", query_id="q2", error="refused"),
            )
        ]
    )
    k3 = _claimed(v, "r-3", "q3", logged=False)  # the request entry's append failed
    k4 = _claimed(v, "r-4", "q4", logged=True)  # a run that is still going: not touched
    v._in_flight[k4] += 1
    assert v.settle() == (0, 1, 2)
    assert _outcomes(v) == [
        ("r-2", "refused"),
        ("r-1", "abandoned: the verification stopped before its verdict was logged; retry"),
    ]
    for key in (k1, k2, k3):  # each retry is a new verification at once
        assert v.requests.claim(key, b"a" * 32) is None
    assert v.requests.claim(k4, b"a" * 32) == (b"a" * 32, None)  # still in progress
    # the three taken again above outside a run (no run holds them): released, k4 kept
    assert v.settle() == (0, 0, 3)


def test_a_retry_of_a_request_left_in_progress_by_a_fault_goes_on_at_once(tmp_path) -> None:
    v = _verifier(tmp_path)
    head = make("330106", dt.date(1970, 3, 4), 11)
    consent = Consent("case-9", dt.date(2026, 11, 1), bytes(32), (head,))
    app = Application("r-9", head, "dibao", "330106", consent, dt.date(2026, 11, 23))
    (first,) = v._take([(app, INTAKE)])
    assert isinstance(first, Claim)
    v.requests.begin([(first.key, "q9", v.audit.store.size())])
    v.audit.append([_request("r-9", "q9")])
    v._let_go([first.key])  # its run failed; the claim could not be released
    (again,) = v._take([(app, INTAKE)])  # settled (an "abandoned" outcome), then claimed
    assert isinstance(again, Claim)
    assert [r for r, _ in _outcomes(v)] == ["r-9"]


def test_a_damaged_kept_verdict_is_data_loss_naming_its_audit_entry(tmp_path) -> None:
    v = _verifier(tmp_path)
    v.requests = v.claims.requests = RequestBook(
        f"sqlite:///{tmp_path / 'sealed.sqlite'}", sealer=StateSealer(bytes(32))
    )
    key = _claimed(v, "r-5", "q5", logged=True)
    (logged,) = v.audit.append(
        [
            audit_pb2.AuditEntry(
                caller="intake",
                verdict=audit_pb2.VerdictEntry(
                    request_id="r-5", query_id="q5", decision=common_pb2.ELIGIBLE
                ),
            )
        ]
    )
    v.requests.complete(key, b"verdict")
    with v.requests.engine.begin() as conn:  # one byte of the sealed verdict changed
        (stored,) = conn.execute(text("SELECT verdict FROM verdict_record")).one()
        changed = bytes(stored[:20]) + bytes([stored[20] ^ 1]) + bytes(stored[21:])
        conn.execute(text("UPDATE verdict_record SET verdict = :v"), {"v": changed})
    (earlier,) = v.requests.claim_many([(key, b"a" * 32)])
    assert isinstance(earlier, Damaged) and earlier.query_id == "q5"
    error = v.claims._damaged(earlier, INTAKE, "r-5")
    assert isinstance(error, StateDamaged)
    status = status_of(error, "r-5")
    assert status.code == grpc.StatusCode.DATA_LOSS.value[0]
    assert f"audit entry {logged.leaf_index}" in status.message


def test_a_damaged_database_is_told_apart_from_one_that_is_down() -> None:
    assert _is_damage(
        DatabaseError("SELECT", {}, sqlite3.DatabaseError("database disk image is malformed"))
    )
    assert not _is_damage(
        OperationalError(
            "INSERT", {}, sqlite3.OperationalError("attempt to write a readonly database")
        )
    )


def _app(rid: str = "r-9") -> Application:
    head = make("330106", dt.date(1970, 3, 4), 11)
    consent = Consent("case-9", dt.date(2026, 11, 1), bytes(32), (head,))
    return Application(rid, head, "dibao", "330106", consent, dt.date(2026, 11, 23))


def test_a_claim_given_back_and_taken_by_another_run_is_not_settled_under_it(tmp_path) -> None:
    v = _verifier(tmp_path)
    (a,) = v._take([(_app(), INTAKE)])  # run A …
    assert isinstance(a, Claim)
    v.claims.release([a.key])  # … gives it back mid-run (a household refused alone)
    (b,) = v._take([(_app(), INTAKE)])  # run B, a retry of the same request id, takes it
    assert isinstance(b, Claim) and b.key == a.key
    v._let_go([a.key])  # run A ends
    v.requests.begin([(b.key, "qB", v.audit.store.size())])
    v.audit.append([_request("r-9", "qB")])
    assert v.settle() == (0, 0, 0)  # B still holds it
    v._let_go([b.key])  # B ends without its outcome (the log refused it)
    assert v.settle() == (0, 1, 0)


def test_a_retry_after_a_request_entry_the_log_refused_is_claimed_at_once(tmp_path) -> None:
    v = _verifier(tmp_path)
    (a,) = v._take([(_app(), INTAKE)])
    assert isinstance(a, Claim)
    v.requests.begin([(a.key, "q1", v.audit.store.size())])  # its request entry never logged
    v._let_go([a.key])  # the run failed, and so did the release
    (again,) = v._take([(_app(), INTAKE)])
    assert isinstance(again, Claim)


def test_a_claim_that_began_is_settled_from_the_log_not_taken_over_by_the_lease(
    tmp_path,
) -> None:
    v = _verifier(tmp_path)
    t = [1000.0]
    v.requests._clock = lambda: t[0]
    (a,) = v._take([(_app(), INTAKE)])
    assert isinstance(a, Claim)
    v.requests.begin([(a.key, "q1", v.audit.store.size())])
    v.audit.append([_request("r-9", "q1")])  # logged; its outcome's append failed
    v._let_go([a.key])
    t[0] += 601  # longer than the lease
    (b,) = v._take([(_app(), INTAKE)])  # settled first (q1 abandoned), then claimed afresh
    assert isinstance(b, Claim)
    assert _outcomes(v) == [
        ("r-9", "abandoned: the verification stopped before its verdict was logged; retry")
    ]

"""Exactly once across crashes: on start, the service settles the claims its previous life left
in progress, from the audit log, and never makes a retry wait for a lease."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hedui.audit.log import AuditLog
from hedui.audit.store import LogStore, open_log_engine
from hedui.core.tokens import audit_token_key
from hedui.proto.v1 import audit_pb2, common_pb2, verification_pb2
from hedui.server.requests import RequestBook
from hedui.server.verifier import Verifier

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


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
    assert v.settle() == (1, 1)
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

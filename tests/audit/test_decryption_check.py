"""`hedui audit verify` counts the custodian's decryptions against the log."""

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hedui.audit.auditor import StoreSource, check_decryptions
from hedui.audit.log import AuditLog
from hedui.audit.store import LogStore, open_log_engine
from hedui.proto.v1 import audit_pb2


def _request(qid: str) -> audit_pb2.AuditEntry:
    return audit_pb2.AuditEntry(request=audit_pb2.RequestEntry(query_id=qid))


def _verdict(qid: str) -> audit_pb2.AuditEntry:
    return audit_pb2.AuditEntry(verdict=audit_pb2.VerdictEntry(query_id=qid))


def test_decryptions_without_verdict_or_of_a_forked_log_show() -> None:
    store = LogStore(open_log_engine("sqlite://"))
    log = AuditLog(store, origin="hedui.test/j", signing_key=Ed25519PrivateKey.generate())
    log.append([_request("q1")])  # leaf 0
    log.append([_request("q2")])  # leaf 1
    root2 = store.root(2)
    log.append([_verdict("q1")])  # leaf 2; q2 never gets one
    records: list[dict] = [
        {"event": "decrypted", "query_id": "q1", "tree_size": 2, "root": root2.hex(), "request_leaves": [0]},
        {"event": "decrypted", "query_id": "q2", "tree_size": 2, "root": root2.hex(), "request_leaves": [1]},
        {"event": "decrypted", "query_id": "q3", "tree_size": 2, "root": "00" * 32, "request_leaves": [1]},
        {"event": "decrypted", "query_id": "q4", "tree_size": 2, "root": root2.hex(), "request_leaves": [1]},
        {"event": "refused", "query_id": "x", "reason": "no grant"},
        {"event": "decrypted", "query_id": "q1", "tree_size": 2, "root": root2.hex(), "request_leaves": [0]},
    ]  # fmt: skip
    check = check_decryptions(StoreSource(store), store.size(), records)
    assert (check.decrypted, check.refused) == (5, 1)
    assert check.without_verdict == ["q2"]
    assert len(check.forks) == 1 and "q3" in check.forks[0]
    assert len(check.not_logged) == 2 and "q4" in check.not_logged[0]
    assert "q1: decrypted more than once" in check.not_logged[1]

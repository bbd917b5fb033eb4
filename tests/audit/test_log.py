"""The stored log: gapless appends, proofs from stored nodes, triggers, signed checkpoints,
and an auditor who is told exactly what an insider changed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from hedui.audit import merkle
from hedui.audit.auditor import (
    AuditorState,
    StoreSource,
    TamperingDetected,
    verify_inclusion,
    verify_log,
)
from hedui.audit.checkpoint import parse_and_verify
from hedui.audit.errors import AuditError
from hedui.audit.log import AuditLog
from hedui.audit.store import LogStore, open_log_engine
from hedui.proto.v1 import audit_pb2

ORIGIN = "test.example/log"
LOG_TABLES = ("log_entry", "log_node", "log_checkpoint", "log_search")  # append-only
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def entry(i: int, who: str = "intake") -> audit_pb2.AuditEntry:
    return audit_pb2.AuditEntry(
        time_unix_ms=1_700_000_000_000 + i,
        caller=who,
        caller_role="intake",
        request=audit_pb2.RequestEntry(
            request_id=f"r-{i}", program="dibao", applicant_audit_token=bytes([i % 256]) * 32
        ),
    )


def make_log(url: str, n: int = 0, key: Ed25519PrivateKey = KEY) -> AuditLog:
    log = AuditLog(LogStore(open_log_engine(url)), origin=ORIGIN, signing_key=key)
    for i in range(n):
        log.append([entry(i)])
    return log


def test_appends_are_gapless_and_proofs_verify(log_url: str) -> None:
    log = make_log(log_url, 5)
    receipts = log.append([entry(5), entry(6), entry(7)])
    assert [r.leaf_index for r in receipts] == [5, 6, 7]
    store = log.store
    leaves = [merkle.leaf_hash(e) for _, e in store.entries(0, 8)]
    assert [i for i, _ in store.entries(0, 8)] == list(range(8))
    for size in range(1, 9):
        assert store.root(size) == merkle.root_from_leaf_hashes(leaves[:size])
        for i in range(size):
            merkle.verify_inclusion(
                leaves[i], i, size, store.inclusion_proof(i, size), store.root(size)
            )
        for s1 in range(1, size + 1):
            merkle.verify_consistency(
                s1, size, store.consistency_proof(s1, size), store.root(s1), store.root(size)
            )
    cp = parse_and_verify(receipts[0].checkpoint, ORIGIN, KEY.public_key(), origin=ORIGIN)
    assert cp.size == 8
    merkle.verify_inclusion(leaves[6], 6, 8, list(receipts[1].inclusion_proof), cp.root)


def test_triggers_reject_update_and_delete(log_url: str) -> None:
    log = make_log(log_url, 3)
    key_column = {"log_checkpoint": "size"}
    statements = []
    for table in LOG_TABLES:
        col = key_column.get(table, "idx")
        statements += [f"UPDATE {table} SET {col} = {col}", f"DELETE FROM {table}"]
    if log.store.engine.dialect.name == "postgresql":
        statements += [f"TRUNCATE {table}" for table in LOG_TABLES]
    for sql in statements:
        with pytest.raises(SQLAlchemyError, match="append-only"), log.store.engine.begin() as conn:
            conn.execute(text(sql))
    verify_log(StoreSource(log.store), KEY.public_key(), ORIGIN)


def _insider(log: AuditLog, *sql: str) -> None:
    """An insider with database access: drops the triggers first."""
    with log.store.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            for table in LOG_TABLES:
                conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}"))
        else:
            for table in LOG_TABLES:
                for op in ("update", "delete"):
                    conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_{op}"))
        for s in sql:
            conn.execute(text(s))


def _one_byte_changed(log: AuditLog, idx: int) -> str:
    data = bytearray(log.store.entries(idx, idx + 1)[0][1])
    data[-1] ^= 0x01
    return (
        f"UPDATE log_entry SET entry = decode('{data.hex()}', 'hex') WHERE idx = {idx}"
        if log.store.engine.dialect.name == "postgresql"
        else f"UPDATE log_entry SET entry = X'{data.hex()}' WHERE idx = {idx}"
    )


@pytest.mark.parametrize("scenario", ["byte", "delete", "reorder", "insert", "byte_and_hashes"])
def test_tampering_is_detected_at_its_index(log_url: str, scenario: str) -> None:
    log = make_log(log_url, 12)
    source = StoreSource(log.store)
    verify_log(source, KEY.public_key(), ORIGIN)
    if scenario == "byte":
        _insider(log, _one_byte_changed(log, 7))
        expected = "entry 7 differs"
    elif scenario == "delete":
        _insider(log, "DELETE FROM log_entry WHERE idx = 4")
        expected = "entry 4 is missing"
    elif scenario == "reorder":
        _insider(
            log,
            "UPDATE log_entry SET idx = 1000 WHERE idx = 5",
            "UPDATE log_entry SET idx = 5 WHERE idx = 6",
            "UPDATE log_entry SET idx = 6 WHERE idx = 1000",
        )
        expected = "entry 5 differs"
    elif scenario == "insert":
        # push entries 9.. one place up and slip a forged entry in at 9
        forged = entry(99).SerializeToString(deterministic=True).hex()
        blob = (
            f"decode('{forged}', 'hex')"
            if log.store.engine.dialect.name == "postgresql"
            else f"X'{forged}'"
        )
        _insider(
            log,
            "UPDATE log_entry SET idx = idx + 1000 WHERE idx >= 9",
            "UPDATE log_entry SET idx = idx - 999 WHERE idx >= 1000",
            f"INSERT INTO log_entry (idx, entry, leaf_hash) VALUES (9, {blob}, {blob})",
        )
        expected = "entry 9 differs"
    else:
        # an insider who also recomputes the stored hashes: the signed checkpoints still catch it
        _insider(log, _one_byte_changed(log, 2), "DELETE FROM log_node")
        expected = "entry 2 differs"
    with pytest.raises(TamperingDetected) as info:
        verify_log(source, KEY.public_key(), ORIGIN)
    assert expected in str(info.value)


def test_rollback_and_fork_are_detected(tmp_path: Path) -> None:
    url_a = f"sqlite:///{tmp_path / 'a.sqlite'}"
    log = make_log(url_a, 6)
    state = AuditorState.load(tmp_path / "state.json")
    verify_log(StoreSource(log.store), KEY.public_key(), ORIGIN, state)
    # rolled back: the operator restores an older copy of the database
    old = make_log(f"sqlite:///{tmp_path / 'b.sqlite'}", 4)
    with pytest.raises(
        TamperingDetected, match="rolled back: it now has 4 entries, you verified 6"
    ):
        verify_log(
            StoreSource(old.store),
            KEY.public_key(),
            ORIGIN,
            AuditorState.load(tmp_path / "state.json"),
        )
    # forked: a different history of the same length and more, signed with the same key
    fork = make_log(f"sqlite:///{tmp_path / 'c.sqlite'}", 3)
    for i in range(3, 8):
        fork.append([entry(i, who="someone-else")])
    with pytest.raises(TamperingDetected, match="forked"):
        verify_log(
            StoreSource(fork.store),
            KEY.public_key(),
            ORIGIN,
            AuditorState.load(tmp_path / "state.json"),
        )
    # the honest log, grown, is consistent with what the auditor saw
    log.append([entry(6), entry(7)])
    report = verify_log(
        StoreSource(log.store), KEY.public_key(), ORIGIN, AuditorState.load(tmp_path / "state.json")
    )
    assert (report.entries, report.previous_size) == (8, 6)


def test_the_log_refuses_to_sign_over_a_changed_past(log_url: str) -> None:
    log = make_log(log_url, 5)
    _insider(log, _one_byte_changed(log, 1), "DELETE FROM log_node")
    leaves = [merkle.leaf_hash(e) for _, e in log.store.entries(0, 5)]
    with log.store.engine.begin() as conn:  # rebuild the nodes as a careful insider would
        t = merkle.MemoryTree()
        for h in leaves:
            t.append_leaf_hash(h)
        for level, hashes in enumerate(t._levels):
            for i, h in enumerate(hashes):
                conn.execute(
                    text("INSERT INTO log_node (level, idx, hash) VALUES (:l, :i, :h)"),
                    {"l": level, "i": i, "h": h},
                )
    with pytest.raises(AuditError, match="refusing to sign"):
        log.append([entry(5)])


def test_inclusion_of_one_entry(log_url: str) -> None:
    log = make_log(log_url, 9)
    data, cp, proof = verify_inclusion(StoreSource(log.store), KEY.public_key(), ORIGIN, 4)
    assert audit_pb2.AuditEntry.FromString(data).request.request_id == "r-4"
    assert cp.size == 9 and len(proof) == 4
    with pytest.raises(AuditError, match="outside the log"):
        verify_inclusion(StoreSource(log.store), KEY.public_key(), ORIGIN, 9)


def test_search_index(log_url: str) -> None:
    log = make_log(log_url, 6)
    store = log.store
    assert [i for i, _ in store.search(applicant_token=bytes([3]) * 32)] == [3]
    assert len(store.search(caller="intake")) == 6
    assert [i for i, _ in store.search(since_ms=1_700_000_000_002, until_ms=1_700_000_000_004)] == [
        2,
        3,
    ]


WRITER = """
import sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hedui.audit.log import AuditLog
from hedui.audit.store import LogStore, open_log_engine
from hedui.proto.v1 import audit_pb2
url, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
log = AuditLog(LogStore(open_log_engine(url)), origin="test.example/log",
               signing_key=Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
print("started", flush=True)
i = 0
while n == 0 or i < n:
    log.append([audit_pb2.AuditEntry(time_unix_ms=i, caller=who, request=audit_pb2.RequestEntry(request_id=f"{who}-{i}"))])
    i += 1
"""


def _writer(url: str, who: str, n: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, url, who, str(n)], stdout=subprocess.PIPE, text=True
    )


@pytest.mark.postgres
def test_concurrent_writers_on_postgres_get_gapless_indexes(pg_url: str) -> None:
    make_log(pg_url)  # create the schema once
    writers = [_writer(pg_url, f"w{k}", 40) for k in range(4)]
    for w in writers:
        assert w.wait(180) == 0
    log = make_log(pg_url)
    assert log.store.size() == 160
    indexes = [i for i, _ in log.store.entries(0, 1000)]
    assert indexes == list(range(160))
    ids = {
        audit_pb2.AuditEntry.FromString(e).request.request_id for _, e in log.store.entries(0, 160)
    }
    assert len(ids) == 160
    log.sign(160)
    report = verify_log(StoreSource(log.store), KEY.public_key(), ORIGIN)
    assert report.entries == 160


def test_writer_killed_mid_append_leaves_no_partial_entry(log_url: str) -> None:
    make_log(log_url)
    w = _writer(log_url, "victim", 0)
    assert w.stdout is not None and w.stdout.readline().strip() == "started"
    log = make_log(log_url)
    deadline = time.monotonic() + 60
    while log.store.size() < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(w.pid, signal.SIGKILL)
    w.wait(30)
    size = log.store.size()
    entries = log.store.entries(0, size + 10)
    assert [i for i, _ in entries] == list(range(size))  # nothing beyond the committed size
    for _, data in entries:
        audit_pb2.AuditEntry.FromString(data)
    log.sign(size)  # the next writer signs a checkpoint over everything committed
    assert verify_log(StoreSource(log.store), KEY.public_key(), ORIGIN).entries == size


def test_a_change_inside_a_batch_is_pinned_to_its_entry(log_url: str) -> None:
    log = make_log(log_url)
    log.append([entry(i) for i in range(10)])  # one checkpoint for all ten
    _insider(log, _one_byte_changed(log, 5))
    with pytest.raises(TamperingDetected, match="entry 5 differs") as info:
        verify_log(StoreSource(log.store), KEY.public_key(), ORIGIN)
    assert info.value.index == 5


def test_a_row_slipped_in_after_the_signed_tree(log_url: str) -> None:
    from hedui.audit.store import StorageError

    log = make_log(log_url, 4)
    forged = entry(99).SerializeToString(deterministic=True).hex()
    blob = (
        f"decode('{forged}', 'hex')"
        if log.store.engine.dialect.name == "postgresql"
        else f"X'{forged}'"
    )
    _insider(log, f"INSERT INTO log_entry (idx, entry, leaf_hash) VALUES (4, {blob}, {blob})")
    report = verify_log(StoreSource(log.store), KEY.public_key(), ORIGIN)
    assert report.entries == 4 and report.unsigned == 1  # reported, never counted as verified
    with pytest.raises(StorageError, match="last stored index is 4"):
        log.append([entry(4)])


def test_a_replaced_log_key_is_tampering(tmp_path: Path) -> None:
    log = make_log(f"sqlite:///{tmp_path / 'a.sqlite'}", 3)
    state = AuditorState.load(tmp_path / "state.json")
    verify_log(StoreSource(log.store), KEY.public_key(), ORIGIN, state)
    other = Ed25519PrivateKey.generate()
    forged = make_log(f"sqlite:///{tmp_path / 'b.sqlite'}", 5, key=other)
    with pytest.raises(TamperingDetected, match="public key is not the one you verified with"):
        verify_log(
            StoreSource(forged.store),
            other.public_key(),
            ORIGIN,
            AuditorState.load(tmp_path / "state.json"),
        )

"""The custodian's gRPC service and the verification service's client of it, over real gRPC:

- a journal or witness state the custodian cannot write stops a decryption before anything
  leaves it (UNAVAILABLE, "cannot write its …; nothing decrypted", logged), and the same request
  succeeds once the fault is removed;
- the client words a status the custodian sent as its refusal, a transport failure as "not
  reachable";
- many requests at once, while the log grows, all succeed: the witness race costs a retry at
  most now and then, never a request.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.rpc import error_details_pb2

from hedui.audit.log import AuditLog
from hedui.audit.store import LogStore, open_log_engine
from hedui.core import grants, rpc
from hedui.core.answers import BatchAnswer
from hedui.core.paillier import PrivateKey
from hedui.core.policy.book import PolicyBook
from hedui.custodian.judges import Judges
from hedui.custodian.keeper import KeyCustodian
from hedui.custodian.service import JOURNAL_FILE, WITNESS_FILE, serve_custodian
from hedui.custodian.witness import DecryptionJournal, LogWitness
from hedui.server.custodian_client import RemoteCustodian
from hedui.server.errors import CustodianRefused
from hedui.server.evidence import log_evidence
from hedui.server.status import status_of
from tests.custodian.test_keeper import (
    BANKS,
    BANKS_ONLY,
    KEY,
    LOG_KEY,
    MEMBERS,
    ORIGIN,
    PUB,
    banks,
    counting_key,
    grant_for,
    households,
    request_entry,
)

JUDGE = Ed25519PrivateKey.generate()  # the custodian's judgement key


class Served:
    """A custodian with its state on disk, served over gRPC; the service's client of it; the
    audit log (SQLite on disk: it is written from many threads)."""

    def __init__(self, root: Path, key: PrivateKey = KEY, journal_dir: str = "custodian") -> None:
        self.log = AuditLog(
            LogStore(open_log_engine(f"sqlite:///{root / 'log.db'}")),
            origin=ORIGIN,
            signing_key=LOG_KEY,
        )
        self.state = root / "custodian"
        self.state.mkdir()
        self.journal_path = root / journal_dir / JOURNAL_FILE
        self.journal_path.parent.mkdir(exist_ok=True)
        self.witness_path = self.state / WITNESS_FILE
        self.custodian = KeyCustodian(
            key,
            BANKS_ONLY,
            min_banks=3,
            witness=LogWitness(LOG_KEY.public_key(), ORIGIN, self.witness_path),
            journal=DecryptionJournal(self.journal_path),
            judges=Judges(PolicyBook.builtin(), JUDGE),
        )
        self.server = serve_custodian(self.custodian, "127.0.0.1:0", None)
        self.remote = RemoteCustodian(
            f"127.0.0.1:{self.server.port}", None, PUB, 30.0, JUDGE.public_key()
        )
        self.errors: list[grpc.RpcError] = []  # every failed call, as the client received it
        real = self.remote._stub.DecryptBatch

        def spy(request: Any, timeout: float) -> Any:
            try:
                return real(request, timeout=timeout)
            except grpc.RpcError as e:
                self.errors.append(e)
                raise

        self.remote._stub.DecryptBatch = spy  # type: ignore[assignment]

    def logged(self, query_id: str, count: int) -> list[int]:
        entry = request_entry(query_id)
        return [r.leaf_index for r in self.log.append([entry] * count)]

    def decrypt(
        self,
        query_id: str,
        answers: Sequence[BatchAnswer],
        n: int,
        grant: grants.Grant,
        leaves: Sequence[int],
    ) -> list[int]:
        """The households the custodian judged (their index in the grant): each judgement's
        signature is checked by the client, and each is about this query."""
        judged = self.remote.judge(
            query_id, answers, n, grant, log_evidence(self.log, leaves), [MEMBERS] * n
        )
        assert {j.record.query_id for j in judged} <= {query_id}
        assert all(j.statement is not None for j in judged)
        return [j.record.household for j in judged]

    def records(self, query_id: str) -> list[str]:
        """The events the journal holds for this query."""
        from hedui.audit.auditor import read_journal

        return [r["event"] for r in read_journal(self.journal_path) if r["query_id"] == query_id]

    def close(self) -> None:
        self.remote.close()
        self.server.stop(0)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path)
    yield s
    s.close()


def _request(
    s: Served, query_id: str, n: int = 2
) -> tuple[list[BatchAnswer], grants.Grant, list[int]]:
    tokens = households(n)
    return banks(query_id, tokens), grant_for(query_id, BANKS, tokens), s.logged(query_id, n)


def _unavailable(s: Served, what: str, reason: str) -> None:
    """The last call failed with the custodian's own UNAVAILABLE naming ``what``."""
    e = s.errors[-1]
    assert isinstance(e, grpc.Call)
    assert e.code() == grpc.StatusCode.UNAVAILABLE
    assert e.details() == f"cannot write its {what}: {reason}; nothing decrypted"
    infos = [d for d in rpc.error_details(e) if isinstance(d, error_details_pb2.ErrorInfo)]
    assert [(i.reason, i.domain) for i in infos] == [
        ("JOURNAL_UNWRITABLE" if what == "journal" else "WITNESS_STATE_UNWRITABLE", "custodian")
    ]


FAULTS = {
    # the journal's path is a directory: it cannot even be opened, nothing is decrypted
    "directory": ("Is a directory", False),
    # the journal's directory is a regular file
    "under-a-file": ("Not a directory", False),
    # the disk is full: the journal opens, the record cannot be written (after decrypting)
    "disk-full": ("No space left on device", True),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_an_unwritable_journal_releases_nothing_and_the_same_request_succeeds_later(
    fault: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = counting_key()
    s = Served(tmp_path, key, journal_dir="journal")
    try:
        answers, grant, leaves = _request(s, "q-before", 1)
        assert s.decrypt("q-before", answers, 1, grant, leaves) == [0]
        saved = tmp_path / "journal.saved"
        shutil.move(s.journal_path, saved)
        if fault == "directory":
            s.journal_path.mkdir()
        elif fault == "under-a-file":
            s.journal_path.parent.rmdir()
            s.journal_path.parent.write_text("not a directory")
        else:
            os.symlink("/dev/full", s.journal_path)
        seen = len(key.seen)
        answers, grant, leaves = _request(s, "q-fault")
        reason, decrypted = FAULTS[fault]
        with caplog.at_level(logging.ERROR, logger="hedui.custodian"):
            with pytest.raises(CustodianRefused) as info:
                s.decrypt("q-fault", answers, 2, grant, leaves)
        message = f"cannot write its journal: {reason}; nothing decrypted"
        assert str(info.value) == f"the key custodian refused (UNAVAILABLE): {message}"
        _unavailable(s, "journal", reason)
        logged = [r for r in caplog.records if r.name == "hedui.custodian"]
        assert [r.levelno for r in logged] == [logging.ERROR]
        assert "query=q-fault" in logged[0].getMessage() and message in logged[0].getMessage()
        # the custodian decrypted only when the journal could be opened, and released nothing
        assert (len(key.seen) > seen) is decrypted
        # the service's table: retryable, not a refusal of the applicant
        status = status_of(info.value, "req-1")
        assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
        assert message in status.message
        # the operator removes the fault: the very same request is decrypted, and journaled once
        if fault == "directory":
            s.journal_path.rmdir()
        elif fault == "under-a-file":
            s.journal_path.parent.unlink()
            s.journal_path.parent.mkdir()
        else:
            s.journal_path.unlink()
        shutil.move(saved, s.journal_path)
        assert s.decrypt("q-fault", answers, 2, grant, leaves) == [0, 1]
        assert s.records("q-fault") == ["decrypted"]
        assert s.records("q-before") == ["decrypted"]
        with pytest.raises(CustodianRefused, match="decrypted already"):
            s.decrypt("q-fault", answers, 2, grant, leaves)
    finally:
        s.close()


def test_a_journal_line_cut_off_by_a_crash_does_not_swallow_the_next_record(
    served: Served,
) -> None:
    answers, grant, leaves = _request(served, "q-a")
    served.decrypt("q-a", answers, 2, grant, leaves)
    with served.journal_path.open("a") as f:
        f.write('{"event": "decrypted", "query_id": "q-cut')  # the custodian died mid-line
    answers, grant, leaves = _request(served, "q-b")
    served.decrypt("q-b", answers, 2, grant, leaves)
    assert served.records("q-b") == ["decrypted"]
    restarted = DecryptionJournal(served.journal_path)
    assert restarted.decrypted() == ["q-a", "q-b"]


def test_an_unwritable_witness_state_advances_nothing_and_the_same_request_succeeds_later(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    answers, grant, leaves = _request(served, "q-w1", 1)
    served.decrypt("q-w1", answers, 1, grant, leaves)
    size = served.custodian.witness.size
    served.witness_path.unlink()
    served.witness_path.mkdir()  # the new state cannot replace it
    answers, grant, leaves = _request(served, "q-w2")  # in a checkpoint it must witness
    with caplog.at_level(logging.ERROR, logger="hedui.custodian"):
        with pytest.raises(CustodianRefused) as info:
            served.decrypt("q-w2", answers, 2, grant, leaves)
    message = "cannot write its witness state: Is a directory; nothing decrypted"
    assert str(info.value) == f"the key custodian refused (UNAVAILABLE): {message}"
    _unavailable(served, "witness state", "Is a directory")
    assert any(message in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    assert served.custodian.witness.size == size
    assert not served.custodian.witness.witnessed(served.log.store.size())
    assert served.records("q-w2") == []
    served.witness_path.rmdir()
    assert served.decrypt("q-w2", answers, 2, grant, leaves) == [0, 1]
    assert served.custodian.witness.size == served.log.store.size() > size
    assert (
        LogWitness(LOG_KEY.public_key(), ORIGIN, served.witness_path).size
        == served.log.store.size()
    )


def test_the_client_words_the_custodians_refusals_and_transport_failures_apart(
    served: Served,
) -> None:
    answers, grant, leaves = _request(served, "q-words")
    # a status the custodian sent: its refusal, with its code and words
    with pytest.raises(CustodianRefused) as info:
        served.remote.judge("q-words", answers, 0, grant, log_evidence(served.log, leaves), [])
    assert str(info.value) == (
        "the key custodian refused (INVALID_ARGUMENT): households: 1 to "
        f"{grants.MAX_BATCH} households, got 0"
    )
    # a refusal of the request itself keeps its own words
    other = grant_for("q-other", BANKS, households(2))
    with pytest.raises(CustodianRefused) as info:
        served.decrypt("q-words", answers, 2, other, leaves)
    assert str(info.value) == "the token grant is for another query"
    # nobody listening: not reachable
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    nobody = RemoteCustodian(f"127.0.0.1:{port}", None, PUB, 2.0, JUDGE.public_key())
    try:
        with pytest.raises(CustodianRefused) as info:
            nobody.judge(
                "q-words", answers, 2, grant, log_evidence(served.log, leaves), [MEMBERS] * 2
            )
        assert str(info.value) == "the key custodian is not reachable (UNAVAILABLE)"
    finally:
        nobody.close()


CALLERS = 8  # concurrent Verify callers, one household each
CALLS = 6  # each
CHUNK = 121  # households of one recheck chunk
CHUNKS = 3


def test_concurrent_decryptions_while_the_log_grows_all_succeed(served: Served) -> None:
    """8 callers and a recheck of 121-household chunks decrypt at once while other entries are
    appended: every call succeeds, the witness never refuses one, and requests are proven again
    only now and then."""
    failures: list[BaseException] = []
    done = threading.Event()

    def caller(name: str, n: int, calls: int) -> None:
        tokens = households(n)
        try:
            for i in range(calls):
                qid = f"{name}-{i}"
                leaves = served.logged(qid, n)
                judged = served.decrypt(
                    qid, banks(qid, tokens), n, grant_for(qid, BANKS, tokens), leaves
                )
                assert judged == list(range(n))
        except BaseException as e:  # reported below
            failures.append(e)

    def grower() -> None:
        while not done.wait(0.002):
            served.logged("other", 1)

    threads = [
        threading.Thread(target=caller, args=(f"c{i}", 1, CALLS)) for i in range(CALLERS)
    ] + [threading.Thread(target=caller, args=("recheck", CHUNK, CHUNKS))]
    growing = threading.Thread(target=grower)
    growing.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    done.set()
    growing.join()
    assert failures == []
    calls = CALLERS * CALLS + CHUNKS
    decrypted = [
        r for r in DecryptionJournal(served.journal_path).decrypted() if not r.startswith("other")
    ]
    assert len(decrypted) == calls
    assert not [e for e in served.errors if e.code() != grpc.StatusCode.FAILED_PRECONDITION]
    # a retry is another request having moved the witness on since the client last heard of
    # it, and the retry is proven in the checkpoint it moved to: about one in three calls here
    # (before the witness remembered its checkpoints: more retries than calls, and failures)
    assert served.remote.witness_retries <= calls, served.remote.witness_retries

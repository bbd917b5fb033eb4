"""The log with a witness (issue #23): each checkpoint is cosigned before it is stored (one
round trip each, proven from the witness's size), the log keeps appending while the witness is
down and gets the cosignature when one is needed again, and an auditor who pinned the witness
checks the cosignature: none is NOT COSIGNED (nothing saved), a bad one is tampering."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hedui.audit.auditor import (
    AuditorState,
    NotCosigned,
    StoreSource,
    TamperingDetected,
    verify_log,
)
from hedui.audit.checkpoint import Checkpoint, sign_checkpoint, split_note
from hedui.audit.cosignature import WitnessPolicy, add_cosignatures, cosign
from hedui.audit.errors import WitnessUnavailable
from hedui.audit.log import AuditLog, Witnessing
from hedui.audit.store import LogStore, open_log_engine
from hedui.proto.v1 import audit_pb2
from tests.witnessing import WITNESS_NAME, LocalWitness

ORIGIN = "hedui.test/witnessed-log"
KEY = Ed25519PrivateKey.generate()


def entry(n: int) -> audit_pb2.AuditEntry:
    return audit_pb2.AuditEntry(
        time_unix_ms=n, caller="t", config_change=audit_pb2.ConfigChange(setting=f"s{n}")
    )


@pytest.fixture
def witness(tmp_path: Path) -> Iterator[LocalWitness]:
    w = LocalWitness.start(tmp_path / "witness", ORIGIN, KEY)
    yield w
    w.stop()


def new_log(tmp_path: Path, witnesses: Witnessing | None, name: str = "log") -> AuditLog:
    url = f"sqlite:///{tmp_path / f'{name}.sqlite'}"
    return AuditLog(
        LogStore(open_log_engine(url)), origin=ORIGIN, signing_key=KEY, witnesses=witnesses
    )


def policy(witness: LocalWitness) -> WitnessPolicy:
    return WitnessPolicy.from_vkeys([witness.vkey])


def test_every_checkpoint_is_stored_cosigned_one_round_trip_each(
    tmp_path: Path, witness: LocalWitness
) -> None:
    witnessing = witness.witnessing()
    log = new_log(tmp_path, witnessing)
    receipts = [log.append([entry(i)] * (i % 3 + 1))[0] for i in range(6)]
    sizes = log.store.checkpoint_sizes()
    assert len(sizes) == 6 and witnessing.round_trips == 6
    for size in sizes:
        note = log.store.checkpoint_at(size)
        assert note is not None
        (c,) = policy(witness).check(note)
        assert c.name == WITNESS_NAME
    assert all(policy(witness).check(r.checkpoint) for r in receipts)  # receipts carry it too
    assert witness.witness().state(ORIGIN).size == sizes[-1]
    assert log.witnessed_latest() == (sizes[-1], log.store.checkpoint_at(sizes[-1]))
    assert witnessing.round_trips == 6  # stored cosigned: not asked again


def test_the_log_appends_while_the_witness_is_down_and_is_cosigned_when_it_is_back(
    tmp_path: Path, witness: LocalWitness, caplog: pytest.LogCaptureFixture
) -> None:
    log = new_log(tmp_path, witness.witnessing(pause=0.2, timeout=2))
    log.append([entry(0)])
    witness.stop()
    log.append([entry(1), entry(2)])  # stored without the cosignature, the log goes on
    size, note = log.store.latest_checkpoint() or (0, b"")
    assert size == 3 and not _cosigned(witness, note)
    assert "stored without cosignature" in caplog.text
    with pytest.raises(WitnessUnavailable) as down:
        log.witnessed_latest()
    assert witness.url in str(down.value) and WITNESS_NAME in str(down.value)
    started = time.monotonic()
    with pytest.raises(WitnessUnavailable):  # within the pause: not asked, the last reason
        log.witnessed_latest()
    assert time.monotonic() - started < 0.1
    time.sleep(0.3)
    witness.serve()  # back, with what it cosigned before (size 1)
    got_size, cosigned = log.witnessed_latest()
    assert got_size == 3 and _cosigned(witness, cosigned)
    assert split_note(cosigned)[0] == split_note(note)[0]
    assert log.checkpoint(3) == cosigned == log.cosigned_note(3)  # remembered, not stored
    assert log.store.checkpoint_at(3) == note
    log.append([entry(3)])  # and the next one is stored cosigned, proven from size 3
    assert _cosigned(witness, log.store.checkpoint_at(4) or b"")


def test_two_writers_of_one_log_each_get_cosignatures(
    tmp_path: Path, witness: LocalWitness
) -> None:
    """Replicas: each remembers its own idea of the witness's size; a 409 sets it right."""
    a = new_log(tmp_path, witness.witnessing(), "shared")
    b = new_log(tmp_path, witness.witnessing(), "shared")
    for i in range(4):
        (a if i % 2 else b).append([entry(i)])
    for size in a.store.checkpoint_sizes():
        assert _cosigned(witness, a.store.checkpoint_at(size) or b"")


def _cosigned(witness: LocalWitness, note: bytes) -> bool:
    try:
        policy(witness).check(note)
    except Exception:
        return False
    return True


def test_an_auditor_checks_the_cosignature_of_the_checkpoint_it_verifies(
    tmp_path: Path, witness: LocalWitness
) -> None:
    log = new_log(tmp_path, witness.witnessing())
    log.append([entry(i) for i in range(5)])
    state = AuditorState(tmp_path / "auditor.json")
    report = verify_log(StoreSource(log.store), KEY.public_key(), ORIGIN, state, policy(witness))
    assert report.cosignatures is not None and report.cosignatures[0].name == WITNESS_NAME
    assert verify_log(StoreSource(log.store), KEY.public_key(), ORIGIN).cosignatures is None
    # a checkpoint the log's key signed alone: reported, and nothing saved
    saved = state.path.read_text()
    bare = new_log(tmp_path, None)
    bare.append([entry(5)])
    with pytest.raises(NotCosigned) as e:
        verify_log(StoreSource(log.store), KEY.public_key(), ORIGIN, state, policy(witness))
    assert e.value.checkpoint.size == 6 and "not cosigned by the log's witness" in str(e.value)
    assert state.path.read_text() == saved


def test_a_cosignature_that_does_not_verify_is_tampering(
    tmp_path: Path, witness: LocalWitness
) -> None:
    """The witness's real cosignature of one checkpoint pasted under another (a fork)."""
    log = new_log(tmp_path, witness.witnessing())
    log.append([entry(0)])
    real = log.store.checkpoint_at(1) or b""
    _, lines = split_note(real)
    fork = sign_checkpoint(Checkpoint(ORIGIN, 1, bytes(32)), ORIGIN, KEY)
    forged = add_cosignatures(fork, [line for line in lines if line.split()[1] == WITNESS_NAME])

    class Forked(StoreSource):
        def checkpoint(self, size: int = 0) -> bytes | None:
            return forged

    with pytest.raises(TamperingDetected, match=r"witness cosignature .* does not verify"):
        verify_log(Forked(log.store), KEY.public_key(), ORIGIN, None, policy(witness))
    # a line by another key under the witness's name is not the witness's: not cosigned
    other = cosign(split_note(real)[0], WITNESS_NAME, Ed25519PrivateKey.generate(), 1)
    only_other = add_cosignatures(split_note(real)[0] + b"\n" + _log_line(real), other)
    assert not _cosigned(witness, only_other)


def _log_line(note: bytes) -> bytes:
    return (split_note(note)[1][0] + "\n").encode()

"""The custodian's witness of the log: the checkpoints it remembers are accepted without a
proof (requests proven in them do not race the ones that move it on), and nothing off the
chain it witnessed is accepted, whatever the evidence claims."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hedui.audit.log import AuditLog
from hedui.audit.store import LogStore, open_log_engine
from hedui.core.custody import LogEvidence, LoggedRequest
from hedui.custodian.errors import Refused, Unavailable
from hedui.custodian.witness import LogWitness, WitnessMoved
from hedui.proto.v1 import audit_pb2

LOG_KEY = Ed25519PrivateKey.generate()
ORIGIN = "hedui.test/witness-log"


def new_log() -> AuditLog:
    return AuditLog(LogStore(open_log_engine("sqlite://")), origin=ORIGIN, signing_key=LOG_KEY)


def logged(log: AuditLog, query_id: str, count: int = 1) -> list[int]:
    entry = audit_pb2.AuditEntry(request=audit_pb2.RequestEntry(query_id=query_id))
    return [r.leaf_index for r in log.append([entry] * count)]


def evidence(
    log: AuditLog, leaves: Sequence[int], size: int, witness_size: int = 0, proven: bool = True
) -> LogEvidence:
    """Inclusion of ``leaves`` in the checkpoint of ``size``; with ``proven``, the consistency
    proof between ``witness_size`` and ``size`` (none otherwise)."""
    store = log.store
    note = store.checkpoint_at(size)
    assert note is not None
    entries = dict(store.entries(min(leaves), max(leaves) + 1))
    proofs = store.inclusion_proofs(list(leaves), size)
    consistency = (
        store.consistency_proof(*sorted((witness_size, size)))
        if proven and 0 < witness_size != size
        else []
    )
    return LogEvidence(
        note,
        tuple(LoggedRequest(i, entries[i], tuple(p)) for i, p in zip(leaves, proofs, strict=True)),
        witness_size,
        tuple(consistency),
    )


def witness(state: Path | None = None, history: int = 100) -> LogWitness:
    return LogWitness(LOG_KEY.public_key(), ORIGIN, state, history=history)


def test_a_witnessed_checkpoint_is_accepted_without_a_proof_after_the_witness_moved_on() -> None:
    log, w = new_log(), witness()
    a = logged(log, "qa")
    w.admit("qa", evidence(log, a, log.store.size()), 1)
    first = w.size
    b = logged(log, "qb", 3)
    w.admit("qb", evidence(log, b, log.store.size(), first), 3)
    assert w.size == first + 3 and w.witnessed(first) and w.witnessed(w.size)
    # qa proven in the checkpoint the witness has moved on from: no proof, any witness size
    for claimed in (0, first, 12345):
        cp = w.admit("qa", evidence(log, a, first, claimed, proven=False), 1)
        assert cp.size == first
    assert w.size == first + 3  # an older checkpoint does not move the witness back


def test_a_newer_checkpoint_needs_a_proof_from_the_latest_not_from_an_older_one() -> None:
    log, w = new_log(), witness()
    w.admit("q1", evidence(log, logged(log, "q1"), 1), 1)
    w.admit("q2", evidence(log, logged(log, "q2"), 2, 1), 1)
    leaves = logged(log, "q3")
    # proven from size 1, which the custodian witnessed, but it is at 2: prove from there
    with pytest.raises(WitnessMoved) as moved:
        w.admit("q3", evidence(log, leaves, 3, 1), 1)
    assert moved.value.size == 2 and w.size == 2
    with pytest.raises(Refused, match="fork or a rollback"):  # a proof that does not verify
        w.admit("q3", evidence(log, leaves, 3, 2, proven=False), 1)
    assert w.size == 2
    w.admit("q3", evidence(log, leaves, 3, 2), 1)
    assert w.size == 3


def test_a_checkpoint_of_a_witnessed_size_with_another_root_is_a_fork() -> None:
    """An insider with the log key signs another history of the same size as one the custodian
    witnessed (and no longer its latest): refused, though no proof is asked for it."""
    log, fork, w = new_log(), new_log(), witness()
    logged(log, "honest", 4)
    leaves = logged(log, "qf")
    w.admit("qf", evidence(log, leaves, 5), 1)
    w.admit("qg", evidence(log, logged(log, "qg"), 6, 5), 1)
    logged(fork, "other", 4)
    forged = logged(fork, "qf")
    assert forged == leaves and fork.store.root(5) != log.store.root(5)
    for claimed in (5, 6):
        with pytest.raises(Refused, match=r"another root .* a fork"):
            w.admit("qf", evidence(fork, forged, 5, claimed, proven=False), 1)
    assert w.size == 6


@pytest.mark.parametrize("shared", [0, 3], ids=["disjoint", "common-prefix"])
def test_a_fork_that_would_advance_the_witness_is_refused(shared: int) -> None:
    log, fork, w = new_log(), new_log(), witness()
    if shared:  # both histories begin alike, then part
        logged(log, "common", shared)
        logged(fork, "common", shared)
        w.admit("common", evidence(log, list(range(shared)), shared), shared)
    logged(log, "honest", 2)
    w.admit("honest", evidence(log, [shared, shared + 1], shared + 2, w.size), 2)
    logged(fork, "other", 2)
    forged = logged(fork, "qx")
    size = fork.store.size()
    # a proof from a size the witness remembers (the shared prefix) does not do: from the latest
    with pytest.raises(WitnessMoved):
        w.admit("qx", evidence(fork, forged, size, shared), 1)
    with pytest.raises(Refused, match="fork or a rollback"):
        w.admit("qx", evidence(fork, forged, size, w.size), 1)
    assert w.size == shared + 2 and not w.witnessed(size)


def test_a_forgotten_or_unseen_older_checkpoint_needs_a_proof_to_the_latest(
    tmp_path: Path,
) -> None:
    log, w = new_log(), witness(tmp_path / "witness.json", history=3)
    first = logged(log, "q0")
    w.admit("q0", evidence(log, first, 1), 1)
    for i in range(1, 5):
        w.admit(f"q{i}", evidence(log, logged(log, f"q{i}"), i + 1, i), 1)
    assert w.size == 5 and not w.witnessed(1) and w.witnessed(3)
    with pytest.raises(WitnessMoved) as moved:
        w.admit("q0", evidence(log, first, 1, proven=False), 1)
    assert moved.value.size == 5
    w.admit("q0", evidence(log, first, 1, 5), 1)  # proven a prefix of the latest: accepted
    assert w.size == 5
    # a restarted custodian remembers its latest only
    restarted = witness(tmp_path / "witness.json")
    assert restarted.size == 5 and restarted.witnessed(5) and not restarted.witnessed(4)
    leaves = [3]  # q3's entry
    with pytest.raises(WitnessMoved):
        restarted.admit("q3", evidence(log, leaves, 4, 4, proven=False), 1)
    restarted.admit("q3", evidence(log, leaves, 5, 5, proven=False), 1)


def test_a_witness_state_that_cannot_be_saved_advances_nothing(tmp_path: Path) -> None:
    state = tmp_path / "witness.json"
    log, w = new_log(), witness(state)
    w.admit("q1", evidence(log, logged(log, "q1"), 1), 1)
    state.unlink()
    state.mkdir()  # what the custodian cannot replace by its new state
    leaves = logged(log, "q2")
    with pytest.raises(Unavailable, match=r"cannot write its witness state: .*; nothing decrypted"):
        w.admit("q2", evidence(log, leaves, 2, 1), 1)
    assert w.size == 1 and not w.witnessed(2)
    assert not (tmp_path / "witness.tmp").exists()
    state.rmdir()
    w.admit("q2", evidence(log, leaves, 2, 1), 1)
    assert w.size == 2 and witness(state).size == 2

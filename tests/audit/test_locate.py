"""`hedui audit verify` names the entry an insider changed, not a range or a later entry: with
the stored hashes rebuilt, inside a batch the log signed once, after a re-signed history; and it
keeps each log's state apart by origin (issue #25, items 6 and 7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from hedui.audit import merkle
from hedui.audit.auditor import (
    AuditorState,
    StoreSource,
    TamperingDetected,
    check_receipt,
    prove_consistency,
    prove_inclusion,
    verify_log,
)
from hedui.audit.checkpoint import parse_and_verify
from hedui.audit.errors import AuditError, VerificationError
from hedui.audit.log import AuditLog, new_origin
from hedui.audit.store import LogStore, open_log_engine
from tests.audit.test_log import KEY, ORIGIN, _insider, _one_byte_changed, entry, make_log

SIZE = 165


def grow(log: AuditLog, batches: list[int]) -> None:
    """Append entries in batches of these sizes (one signed checkpoint per batch)."""
    n = log.store.size()
    for b in batches:
        log.append([entry(i) for i in range(n, n + b)])
        n += b


def rebuild_hashes(log: AuditLog) -> None:
    """What a careful insider does after changing an entry: every stored hash recomputed from
    the entries as they now are (leaf hashes and the tree's nodes)."""
    entries = log.store.entries(0, log.store.size())
    tree = merkle.MemoryTree()
    for _, data in entries:
        tree.append(data)
    with log.store.engine.begin() as conn:
        conn.execute(text("DELETE FROM log_node"))
        for level, hashes in enumerate(tree._levels):
            for i, h in enumerate(hashes):
                conn.execute(
                    text("INSERT INTO log_node (level, idx, hash) VALUES (:l, :i, :h)"),
                    {"l": level, "i": i, "h": h},
                )
        for i, _ in entries:
            conn.execute(
                text("UPDATE log_entry SET leaf_hash = :h WHERE idx = :i"),
                {"h": tree.subtree_hash(i, i + 1), "i": i},
            )


def change_entry_96(log: AuditLog) -> None:
    _insider(log, _one_byte_changed(log, 96))
    rebuild_hashes(log)


def tampering(log: AuditLog, state: Path | None = None) -> TamperingDetected:
    with pytest.raises(TamperingDetected) as info:
        verify_log(
            StoreSource(log.store),
            KEY.public_key(),
            ORIGIN,
            None if state is None else AuditorState.load(state),
        )
    return info.value


def test_a_changed_entry_inside_a_batch_is_named_by_an_auditor_who_verified_before(
    tmp_path: Path,
) -> None:
    # entries 95..130 were appended together, under one checkpoint at size 131
    log = make_log(f"sqlite:///{tmp_path / 'log.sqlite'}", 95)
    grow(log, [36] + [1] * (SIZE - 131))
    state = tmp_path / "state.json"
    verify_log(StoreSource(log.store), KEY.public_key(), ORIGIN, AuditorState.load(state))
    change_entry_96(log)
    e = tampering(log, state)
    assert e.index == 96 and "entry 96 differs from the entry you verified before" in str(e)
    # a first verification has nothing but the log's signatures: it says what they can tell
    e = tampering(log)
    assert e.index is None and "[95, 131)" in str(e) and "36 entries together" in str(e)


def test_a_probe_without_a_checkpoint_looks_below_as_well(log_url: str) -> None:
    # signed sizes ..., 89, 90, 96, 97, 131, 132, ...: nothing between 97 and 131
    log = make_log(log_url, 90)
    grow(log, [6, 1, 34] + [1] * (SIZE - 131))
    assert log.store.checkpoint_at(110) is None and log.store.checkpoint_at(97) is not None
    change_entry_96(log)
    e = tampering(log)
    assert e.index == 96, str(e)
    assert "entry 96 differs from the entry the log signed at tree size 97" in str(e)


def test_one_byte_in_entry_96_with_its_hashes_rebuilt_is_named(log_url: str) -> None:
    log = make_log(log_url, SIZE)
    change_entry_96(log)
    e = tampering(log)
    assert e.index == 96 and "entry 96 differs" in str(e)


def _resign(log: AuditLog) -> None:
    """An insider with the log's key: the old checkpoints gone, the changed history signed."""
    _insider(log, "DELETE FROM log_checkpoint")
    for size in range(1, log.store.size() + 1):
        log.sign(size)


def test_a_re_signed_fork_names_the_entry_changed_not_the_last(tmp_path: Path) -> None:
    log = make_log(f"sqlite:///{tmp_path / 'log.sqlite'}", SIZE)
    state = tmp_path / "state.json"
    verify_log(StoreSource(log.store), KEY.public_key(), ORIGIN, AuditorState.load(state))
    old_format = tmp_path / "old.json"  # as hedui 0.1 wrote it: no entry hashes beside it
    old_format.write_text(json.dumps(json.loads(state.read_text())["logs"][ORIGIN]))
    change_entry_96(log)
    _resign(log)
    e = tampering(log, state)
    assert "forked" in str(e) and e.index == 96, str(e)
    assert "entry 96 differs from the entry you verified before" in str(e)
    e = tampering(log, old_format)  # never blames an innocent entry
    assert "forked" in str(e) and e.index is None and "164" not in str(e), str(e)
    assert "signed its history again" in str(e)


def test_state_is_kept_by_origin_and_a_changed_key_says_what_to_do(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    first = make_log(f"sqlite:///{tmp_path / 'a.sqlite'}", 3)
    verify_log(StoreSource(first.store), KEY.public_key(), ORIGIN, AuditorState.load(state))
    # another deployment: its own origin and key; the same state file holds both logs
    other_key, other_origin = Ed25519PrivateKey.generate(), new_origin()
    second = AuditLog(
        LogStore(open_log_engine(f"sqlite:///{tmp_path / 'b.sqlite'}")),
        origin=other_origin,
        signing_key=other_key,
    )
    second.append([entry(0)])
    report = verify_log(
        StoreSource(second.store), other_key.public_key(), other_origin, AuditorState.load(state)
    )
    assert report.previous_size is None
    assert set(json.loads(state.read_text())["logs"]) == {ORIGIN, other_origin}
    first.append([entry(3)])
    report = verify_log(
        StoreSource(first.store), KEY.public_key(), ORIGIN, AuditorState.load(state)
    )
    assert report.previous_size == 3
    # the same origin under another key is still tampering, and the message says what to do
    forged = make_log(f"sqlite:///{tmp_path / 'c.sqlite'}", 5, key=other_key)
    with pytest.raises(TamperingDetected) as info:
        verify_log(
            StoreSource(forged.store), other_key.public_key(), ORIGIN, AuditorState.load(state)
        )
    message = str(info.value)
    assert "public key is not the one you verified with before" in message
    assert "a state file of its own: --state FILE" in message and str(state) in message


def test_a_fresh_origin_per_deployment() -> None:
    a, b = new_origin(), new_origin()
    assert a != b
    for o in (a, b):
        assert (
            o.startswith("hedui.local/")
            and o.endswith("-log")
            and len(o) == len("hedui.local/01234567-log")
        )


def test_a_receipt_is_checked_with_the_public_key_alone(log_url: str) -> None:
    log = make_log(log_url, 20)
    doc = json.loads(
        json.dumps(prove_inclusion(StoreSource(log.store), KEY.public_key(), ORIGIN, 7).to_json())
    )
    index, data = check_receipt(doc, KEY.public_key())
    assert index == 7 and data == log.store.entries(7, 8)[0][1]
    forged = dict(doc, entry_base64=doc["entry_base64"][:-4] + "AAA=")
    with pytest.raises(VerificationError):
        check_receipt(forged, KEY.public_key())
    with pytest.raises(VerificationError):
        check_receipt(doc, Ed25519PrivateKey.generate().public_key())


def test_consistency_between_two_sizes(log_url: str) -> None:
    log = make_log(log_url, 10)
    grow(log, [5, 1])  # no checkpoint at 11..14
    source = StoreSource(log.store)
    got = prove_consistency(source, KEY.public_key(), ORIGIN, 4, 15)
    assert got.first_note is not None and got.second_note is not None
    first = parse_and_verify(got.first_note, ORIGIN, KEY.public_key(), origin=ORIGIN)
    second = parse_and_verify(got.second_note, ORIGIN, KEY.public_key(), origin=ORIGIN)
    merkle.verify_consistency(4, 15, got.proof, first.root, second.root)
    unsigned = prove_consistency(source, KEY.public_key(), ORIGIN, 12)
    assert unsigned.first_note is None and unsigned.second == 16
    assert unsigned.to_json(ORIGIN)["first"]["signed"] is False
    with pytest.raises(AuditError, match="1 <= FIRST <= SECOND <= 16"):
        prove_consistency(source, KEY.public_key(), ORIGIN, 0, 5)
    with pytest.raises(AuditError, match="1 <= FIRST <= SECOND <= 16"):
        prove_consistency(source, KEY.public_key(), ORIGIN, 5, 17)

"""The custodian decrypts only under checkpoints its witnesses cosigned (issue #23): the
cosignature is checked first, so a history signed with the service's log key for the custodian
alone is refused whatever else its evidence holds; a real cosignature pasted under a fork, or
a cosignature by another key under the witness's name, is refused too. A custodian enrolled
into a running log starts from the checkpoint pinned in its config. Its config must name the
witness."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hedui.audit.checkpoint import Checkpoint
from hedui.audit.cosignature import (
    WitnessPolicy,
    add_cosignatures,
    cosign,
    cosigner_vkey,
    split_note,
)
from hedui.audit.log import AuditLog
from hedui.audit.store import LogStore, open_log_engine
from hedui.core.custody import LogEvidence
from hedui.custodian.errors import ConfigError, Refused
from hedui.custodian.service import load_custodian_config
from hedui.custodian.witness import LogWitness
from tests.custodian.test_witness import LOG_KEY, ORIGIN, evidence, logged, new_log

WITNESS = "hedui.test/custodian-witness"
WITNESS_KEY = Ed25519PrivateKey.generate()
VKEY = cosigner_vkey(WITNESS, WITNESS_KEY.public_key())
NOW = 1_800_000_000


def cosigned(note: bytes, key: Ed25519PrivateKey = WITNESS_KEY, at: int = NOW - 5) -> bytes:
    """``note`` with a cosignature line by ``key`` under the witness's name."""
    return add_cosignatures(note, cosign(split_note(note)[0], WITNESS, key, at))


def witness(state: Path | None = None, first: tuple[int, bytes] | None = None) -> LogWitness:
    return LogWitness(
        LOG_KEY.public_key(),
        ORIGIN,
        state,
        witnesses=WitnessPolicy.from_vkeys([VKEY]),
        first=first,
        clock=lambda: NOW,
    )


def with_note(e: LogEvidence, note: bytes) -> LogEvidence:
    return dataclasses.replace(e, checkpoint=note)


def test_a_cosigned_checkpoint_is_admitted_and_a_bare_one_refused_first() -> None:
    log, w = new_log(), witness()
    leaves = logged(log, "q1")
    bare = evidence(log, leaves, log.store.size())
    with pytest.raises(Refused, match="not cosigned by the log's witness"):
        w.admit("q1", bare, 1)
    # refused before anything else: the same with evidence that proves nothing at all
    with pytest.raises(Refused, match="not cosigned by the log's witness"):
        w.admit("q1", LogEvidence(bare.checkpoint, (), 0, ()), 5)
    assert w.size == 0  # nothing witnessed
    cp = w.admit("q1", with_note(bare, cosigned(bare.checkpoint)), 1)
    assert cp.size == w.size == log.store.size()
    # a remembered checkpoint still needs its cosignature
    with pytest.raises(Refused, match="not cosigned"):
        w.admit("q1", bare, 1)


def test_a_fork_signed_with_the_log_key_gets_nowhere_without_the_witness() -> None:
    """The insider signs a forked history with the service's log key; the real witness
    cosignature of the real checkpoint of that size, pasted under it, does not verify."""
    real, w = new_log(), witness()
    leaves = logged(real, "q0")
    e = evidence(real, leaves, real.store.size())
    w.admit("q0", with_note(e, cosigned(e.checkpoint)), 1)
    fork = AuditLog(LogStore(open_log_engine("sqlite://")), origin=ORIGIN, signing_key=LOG_KEY)
    logged(fork, "other")
    f_leaves = logged(fork, "qf")
    forked = evidence(fork, f_leaves, fork.store.size(), w.size)
    with pytest.raises(Refused, match="not cosigned"):
        w.admit("qf", forked, 1)
    logged(real, "next")
    real_note = cosigned(real.store.checkpoint_at(real.store.size()) or b"")
    _, lines = split_note(real_note)
    pasted = add_cosignatures(forked.checkpoint, [ln for ln in lines if WITNESS in ln])
    with pytest.raises(Refused, match="witness cosignature of the log checkpoint does not verify"):
        w.admit("qf", with_note(forked, pasted), 1)
    # another key under the witness's name is not the witness
    with pytest.raises(Refused, match="not cosigned"):
        w.admit(
            "qf", with_note(forked, cosigned(forked.checkpoint, Ed25519PrivateKey.generate())), 1
        )
    # a cosignature dated well into the future (a witness's clock, or a forgery) is refused
    with pytest.raises(Refused, match="in the future"):
        w.admit("q0", with_note(e, cosigned(e.checkpoint, at=NOW + 3600)), 1)
    assert w.size == 1


def test_a_custodian_enrolled_into_a_running_log_starts_from_the_pinned_checkpoint(
    tmp_path: Path,
) -> None:
    log = new_log()
    logged(log, "early", 3)
    pinned = Checkpoint.from_body(split_note(log.store.checkpoint_at(3) or b"")[0])
    w = witness(tmp_path / "witness.json", first=(pinned.size, pinned.root))
    assert w.size == 3 and w.witnessed(3)
    leaves = logged(log, "q")
    e = evidence(log, leaves, log.store.size(), 3)
    w.admit("q", with_note(e, cosigned(e.checkpoint)), 1)
    assert w.size == 4
    # a log that does not extend the pinned checkpoint is a fork, cosigned or not
    other = AuditLog(LogStore(open_log_engine("sqlite://")), origin=ORIGIN, signing_key=LOG_KEY)
    fresh = witness(tmp_path / "fresh.json", first=(pinned.size, pinned.root))
    o_leaves = logged(other, "o", 4)
    o = evidence(other, o_leaves[-1:], other.store.size(), 3)
    with pytest.raises(Refused, match="fork or a rollback"):
        fresh.admit("o", with_note(o, cosigned(o.checkpoint)), 1)
    # once it has witnessed, its own state counts, not the pin
    again = witness(tmp_path / "witness.json", first=(1, bytes(32)))
    assert again.size == 4


def _config(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "custodian.toml"
    path.write_text(
        "[custodian]\n"
        f'keys_dir = "{tmp_path / "keys"}"\nstate_dir = "{tmp_path / "state"}"\n'
        'connectors = ["hrss"]\nlog_origin = "hedui.test/o-log"\n' + extra,
        encoding="utf-8",
    )
    return path


def test_the_custodian_config_must_name_its_witness(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="witness_vkeys names no witness"):
        load_custodian_config(_config(tmp_path, ""), {})
    with pytest.raises(ConfigError, match="witness_vkeys"):
        load_custodian_config(_config(tmp_path, 'witness_vkeys = ["not a vkey"]\n'), {})
    log_vkey = "hedui.test/o-log+" + VKEY.split("+", 1)[1]  # a vkey of another name or type
    with pytest.raises(ConfigError):
        load_custodian_config(_config(tmp_path, f'witness_vkeys = ["{log_vkey}"]\n'), {})
    with pytest.raises(ConfigError, match="quorum"):
        load_custodian_config(
            _config(tmp_path, f'witness_vkeys = ["{VKEY}"]\nwitness_quorum = 2\n'), {}
        )
    with pytest.raises(ConfigError, match="first_checkpoint"):
        load_custodian_config(
            _config(tmp_path, f'witness_vkeys = ["{VKEY}"]\nfirst_checkpoint_size = 3\n'), {}
        )
    config = load_custodian_config(
        _config(
            tmp_path,
            f'witness_vkeys = ["{VKEY}"]\nfirst_checkpoint_size = 3\n'
            f'first_checkpoint_root = "{"ab" * 32}"\n',
        ),
        {},
    )
    assert config.witness_policy().witnesses[0].vkey == VKEY
    assert config.first_checkpoint() == (3, bytes.fromhex("ab" * 32))
    # and what `hedui up` writes reads back the same
    (tmp_path / "again.toml").write_text(config.to_toml(), encoding="utf-8")
    assert load_custodian_config(tmp_path / "again.toml", {}) == config

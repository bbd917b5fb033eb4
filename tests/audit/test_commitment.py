"""Commitments to a verdict's figures: they open with the right figures and salt only."""

from __future__ import annotations

import pytest

from hedui.audit.commitment import SALT_BYTES, canonical, commit, opens
from hedui.proto.v1 import verification_pb2

SALT = bytes(range(SALT_BYTES))


def _verdict(benefit: int = 105900, salt: bytes = SALT) -> verification_pb2.Verdict:
    v = verification_pb2.Verdict(benefit_fen=benefit, figures_opening=salt)
    income = v.rules.add(id="income", threshold=252000)
    income.value = 146100
    income.figures.add(name="income_high", value=146100, comparison="", threshold=0)
    v.rules.add(id="vehicles", threshold=0)
    return v


def test_a_verdict_opens_its_own_commitment() -> None:
    v = _verdict()
    assert opens(commit(SALT, v), v)


@pytest.mark.parametrize(
    "change",
    [
        lambda v: setattr(v, "benefit_fen", v.benefit_fen + 100),
        lambda v: setattr(v.rules[0], "value", 146000),
        lambda v: setattr(v.rules[0].figures[0], "value", 1),
        lambda v: v.rules[1].ClearField("threshold"),
        lambda v: setattr(v, "figures_opening", bytes(SALT_BYTES)),
    ],
)
def test_any_other_figure_or_salt_does_not(change) -> None:  # type: ignore[no-untyped-def]
    committed = commit(SALT, _verdict())
    v = _verdict()
    change(v)
    assert not opens(committed, v)


def test_the_commitment_hides_the_figures() -> None:
    a, b = commit(SALT, _verdict(100)), commit(bytes(SALT_BYTES), _verdict(100))
    assert a != b  # the same figures under another salt look unrelated
    assert b"105900" not in commit(SALT, _verdict()) and b"105900" in canonical(_verdict())


def test_a_malformed_opening_opens_nothing() -> None:
    v = _verdict(salt=b"short")
    assert not opens(commit(SALT, _verdict()), v)
    with pytest.raises(ValueError):
        commit(b"short", v)

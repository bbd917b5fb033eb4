import sqlite3
from pathlib import Path

import pytest

from hedui.proto.v1 import common_pb2, verification_pb2
from hedui.server.requests import RequestBook, StateSealer, StateUnavailable

KEY, APP, OTHER = b"k" * 32, b"a" * 32, b"b" * 32


def test_claims_conflicts_and_abandoned_claims(tmp_path: Path) -> None:
    now = [1000.0]
    book = RequestBook(f"sqlite:///{tmp_path / 's.sqlite'}", lease_seconds=60, clock=lambda: now[0])
    assert book.claim(KEY, APP) is None  # ours
    assert book.claim(KEY, APP) == (APP, None)  # in progress
    assert book.claim(KEY, OTHER) == (APP, None)  # another application under the same id
    now[0] += 61  # the first claimer died: the next caller takes the claim over
    assert book.claim(KEY, APP) is None
    assert book.claim(KEY, APP) == (APP, None)
    book.complete(KEY, b"verdict")
    now[0] += 1000
    assert book.claim(KEY, APP) == (APP, b"verdict")  # a verdict is never taken over
    assert book.claim_many([(KEY, APP), (b"n" * 32, APP)]) == [(APP, b"verdict"), None]
    book.release(b"n" * 32)
    assert book.claim(b"n" * 32, APP) is None


# -- issue #11 item 6: verdicts sealed at rest, figures purged after the retention ------------

SEALER = StateSealer(b"s" * 32)


def _verdict() -> bytes:
    v = verification_pb2.Verdict(
        request_id="r-1", decision=common_pb2.ELIGIBLE, benefit_fen=105900,
        figures_opening=b"o" * 32,
    )  # fmt: skip
    rule = v.rules.add(id="income", outcome=common_pb2.PASSED, threshold=252000, value=146100)
    rule.message_en = "household monthly income 1461.00 yuan is below the line of 2520.00 yuan"
    rule.figures.add(name="income_high", value=146100)
    v.audit.leaf_index = 42
    return v.SerializeToString(deterministic=True)


def _book(tmp_path: Path, now: list[float]) -> RequestBook:
    return RequestBook(f"sqlite:///{tmp_path / 's.sqlite'}", clock=lambda: now[0], sealer=SEALER)


def test_a_kept_verdict_is_sealed_at_rest(tmp_path: Path) -> None:
    now = [1000.0]
    book = _book(tmp_path, now)
    assert book.claim(KEY, APP) is None
    book.complete(KEY, _verdict())
    assert book.claim(KEY, APP) == (APP, _verdict())
    raw = (tmp_path / "s.sqlite").read_bytes()
    assert b"1461.00" not in raw and b"r-1" not in raw
    # a sealed verdict moved to another request's row does not open there
    assert book.claim(OTHER, APP) is None
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        db.execute(
            "UPDATE verdict_record SET verdict = (SELECT verdict FROM verdict_record "
            "WHERE request_key = ?) WHERE request_key = ?",
            (KEY, OTHER),
        )
    with pytest.raises(StateUnavailable, match="integrity check"):
        book.claim(OTHER, APP)


def test_retention_purges_the_figures_and_keeps_the_decision(tmp_path: Path) -> None:
    now = [1000.0]
    book = _book(tmp_path, now)
    assert book.claim(KEY, APP) is None
    book.complete(KEY, _verdict())
    now[0] += 10 * 86400
    assert book.claim(OTHER, APP) is None
    book.complete(OTHER, _verdict())
    assert book.purge(now[0] - 5 * 86400) == 1  # only the older one
    assert book.purge(now[0] - 5 * 86400) == 0  # once
    earlier = book.claim(KEY, APP)
    assert earlier is not None and earlier[1] is not None
    kept = verification_pb2.Verdict.FromString(earlier[1])
    assert kept.decision == common_pb2.ELIGIBLE and kept.audit.leaf_index == 42
    assert kept.benefit_fen == 0 and not kept.figures_opening
    assert not kept.rules[0].HasField("value") and not kept.rules[0].figures
    assert not kept.rules[0].message_en and kept.rules[0].outcome == common_pb2.PASSED
    recent = book.claim(OTHER, APP)
    assert recent == (APP, _verdict())


def test_an_unsealed_row_is_refused_and_a_damaged_row_does_not_stop_retention(
    tmp_path: Path,
) -> None:
    now = [1000.0]
    plain = RequestBook(f"sqlite:///{tmp_path / 's.sqlite'}", clock=lambda: now[0])
    assert plain.claim(KEY, APP) is None
    plain.complete(KEY, _verdict())  # written unsealed, as an insider with the file could
    book = _book(tmp_path, now)
    with pytest.raises(StateUnavailable, match="integrity check"):
        book.claim(KEY, APP)
    assert book.claim(OTHER, APP) is None
    book.complete(OTHER, _verdict())
    now[0] += 40 * 86400
    assert book.purge(now[0] - 30 * 86400) == 1  # the sealed one; the damaged one is named
    kept = book.claim(OTHER, APP)
    assert kept is not None and kept[1] is not None
    assert not verification_pb2.Verdict.FromString(kept[1]).figures_opening

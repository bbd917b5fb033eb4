from pathlib import Path

from hedui.server.requests import RequestBook

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

"""A silent VerifyBatch client no longer holds one of the service's two batch places (issue #11,
admission control): the stream reader flushes on a pause and closes after a long silence."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from hedui.server.streams import PAUSE, StreamIdle, paced


def _client(items: list[str], then: threading.Event) -> Iterator[str]:
    yield from items
    then.wait(10)  # a client that keeps the stream open and sends nothing more


def test_a_pause_flushes_and_a_long_silence_closes_the_stream() -> None:
    hold = threading.Event()
    got: list[str | None] = []
    with pytest.raises(StreamIdle, match=r"no application for 0\.2 s"):
        for item in paced(_client(["a", "b"], hold), flush_after=0.05, close_after=0.2):
            got.append(item)
    hold.set()
    assert got[:2] == ["a", "b"]
    assert got[2:] == [PAUSE] * 3  # told of the pause three times, then closed


def test_a_steady_stream_is_read_to_its_end() -> None:
    assert list(paced(iter(["a", "b", "c"]), flush_after=5, close_after=10)) == ["a", "b", "c"]


def test_a_failed_stream_ends_the_reader_with_its_error() -> None:
    def broken() -> Iterator[str]:
        yield "a"
        raise ConnectionError("the call was cancelled")

    reader = paced(broken(), flush_after=5, close_after=10)
    assert next(reader) == "a"
    with pytest.raises(ConnectionError):
        next(reader)

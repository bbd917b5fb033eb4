"""Concurrent Verify calls gathered into one pipeline run (issue #22 item 2)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from hedui.server.gather import Gatherer


class Pipeline:
    """Records every run; the first run waits until told to go, so that the others queue."""

    def __init__(self, hold_first: bool = False) -> None:
        self.runs: list[list[int]] = []
        self.go = threading.Event()
        self.started = threading.Event()
        self._hold = hold_first
        self._lock = threading.Lock()

    def __call__(self, asks: Sequence[int]) -> list[int]:
        with self._lock:
            first = not self.runs
            self.runs.append(list(asks))
        if first and self._hold:
            self.started.set()
            self.go.wait(10)
        return [a * 10 for a in asks]


def _seven_waiting_behind_one(
    pool: ThreadPoolExecutor, g: Gatherer[int, int], p: Pipeline
) -> tuple[Future[int], list[Future[int]]]:
    """Call 0 holds the run; calls 1..7 wait behind it; then the run goes on."""
    first = pool.submit(g.submit, 0)
    assert p.started.wait(10)
    rest = [pool.submit(g.submit, i) for i in range(1, 8)]
    while len(g._queue) < 7:  # every other caller is waiting
        threading.Event().wait(0.01)
    p.go.set()
    return first, rest


def test_a_lone_call_runs_at_once_and_alone() -> None:
    p = Pipeline()
    g = Gatherer(p, max_households=32, window=5.0)  # a long window is never waited when idle
    assert g.submit(7) == 70
    assert p.runs == [[7]]


def test_callers_waiting_behind_a_run_share_the_next_one() -> None:
    p = Pipeline(hold_first=True)
    g = Gatherer(p, max_households=32, window=0.0, runners=1)
    with ThreadPoolExecutor(8) as pool:
        first, rest = _seven_waiting_behind_one(pool, g, p)
        assert first.result(10) == 0
        assert [f.result(10) for f in rest] == [i * 10 for i in range(1, 8)]
    assert p.runs[0] == [0] and sorted(p.runs[1]) == list(range(1, 8)) and len(p.runs) == 2


def test_a_run_takes_at_most_max_households() -> None:
    p = Pipeline(hold_first=True)
    g = Gatherer(p, max_households=3, window=0.0, runners=1)
    with ThreadPoolExecutor(8) as pool:
        first, rest = _seven_waiting_behind_one(pool, g, p)
        assert [f.result(10) for f in [first, *rest]] == [i * 10 for i in range(8)]
    assert all(len(r) <= 3 for r in p.runs) and sorted(a for r in p.runs for a in r) == list(
        range(8)
    )


def test_a_failed_run_fails_each_of_its_calls_and_the_next_run_goes_on() -> None:
    calls = []

    def run(asks: Sequence[int]) -> list[int]:
        calls.append(list(asks))
        if len(calls) == 1:
            raise RuntimeError("the audit log is gone")
        return list(asks)

    g = Gatherer(run)
    with pytest.raises(RuntimeError, match="audit log"):
        g.submit(1)
    assert g.submit(2) == 2

"""Concurrent ``Verify`` calls gathered into one pipeline run, so that eight callers cost one
fan-out to the 86 connectors instead of eight.

No thread of its own: a call that finds a runner free leads a run with every call waiting then
(at most ``max_households``); the others wait for their outcome. An idle service runs a lone
call at once; while another run is in flight, a leader waits up to ``window`` seconds for more
calls to join it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

_A = TypeVar("_A")
_R = TypeVar("_R")


@dataclass
class _Waiting(Generic[_A, _R]):
    ask: _A
    done: threading.Event = field(default_factory=threading.Event)
    taken: bool = False
    result: _R | None = None
    error: BaseException | None = None


class Gatherer(Generic[_A, _R]):
    def __init__(
        self,
        run: Callable[[Sequence[_A]], Sequence[_R]],
        *,
        max_households: int = 32,
        window: float = 0.010,
        runners: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._run = run
        self._max = max(1, max_households)
        self._window = max(0.0, window)
        self._runners = max(1, runners)
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: list[_Waiting[_A, _R]] = []
        self._running = 0

    def submit(self, ask: _A) -> _R:
        """Run ``ask`` with whatever else is waiting; its own outcome."""
        me: _Waiting[_A, _R] = _Waiting(ask)
        with self._cond:
            self._queue.append(me)
            self._cond.notify_all()
        while not me.done.is_set():
            with self._cond:
                batch = self._lead(me)
            if batch is None:  # another call's run holds this one
                me.done.wait()
            else:  # the oldest waiting calls, this one among them unless more than a run waited
                self._execute(batch)
        if me.error is not None:
            raise me.error
        return me.result  # type: ignore[return-value]

    def _lead(self, me: _Waiting[_A, _R]) -> list[_Waiting[_A, _R]] | None:
        """Under the lock: the batch this call leads, or None when another call took it."""
        while not me.taken:
            if self._running < self._runners:
                if self._running and self._window:
                    # another run is in flight: let more calls join this one for a moment
                    deadline = self._clock() + self._window
                    while len(self._queue) < self._max and not me.taken:
                        left = deadline - self._clock()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                    if me.taken or self._running >= self._runners:
                        continue
                batch = self._queue[: self._max]
                del self._queue[: self._max]
                for w in batch:
                    w.taken = True
                self._running += 1
                return batch
            self._cond.wait()
        return None

    def _execute(self, batch: list[_Waiting[_A, _R]]) -> None:
        try:
            results = self._run([w.ask for w in batch])
            for w, r in zip(batch, results, strict=True):
                w.result = r
        except BaseException as e:  # every call of the run gets the failure
            for w in batch:
                w.error = e
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()
            for w in batch:
                w.done.set()

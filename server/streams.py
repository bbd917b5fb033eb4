"""Reading a client's request stream without letting a silent client hold the service.

``VerifyBatch`` has two places at once (admission control). A client that opens a stream and
then sends nothing would hold one for as long as its deadline allows; :func:`paced` reads the
stream on a thread of its own and tells the handler when the client has gone quiet: after
``flush_after`` seconds (verify the applications received so far, so their answers do not wait
for a full chunk) and after ``close_after`` seconds (end the stream and free its place).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

from hedui.server.errors import ServiceError

T = TypeVar("T")

PAUSE = None  # what paced() yields when the client paused: flush what is pending
_END = object()


class StreamIdle(ServiceError):
    """The client sent nothing for ``close_after`` seconds."""


def paced(requests: Iterator[T], flush_after: float, close_after: float) -> Iterator[T | None]:
    """The requests as they come, with PAUSE after each ``flush_after`` seconds of silence;
    StreamIdle once the silence reaches ``close_after``. At most 64 requests are read ahead,
    so a client still waits on a busy service (flow control is kept)."""
    box: queue.Queue[object] = queue.Queue(maxsize=64)

    def read() -> None:
        try:
            for r in requests:
                box.put(r)
        except Exception as e:  # the call ended (cancelled, deadline): the handler ends too
            box.put(e)
        box.put(_END)

    threading.Thread(target=read, name="hedui-stream-reader", daemon=True).start()
    quiet = 0.0
    while True:
        try:
            item = box.get(timeout=flush_after)
        except queue.Empty:
            quiet += flush_after
            if quiet >= close_after:
                raise StreamIdle(
                    f"no application for {close_after:g} s: the stream was closed to free its "
                    "place; send the rest on a new stream"
                ) from None
            yield PAUSE
            continue
        quiet = 0.0
        if item is _END:
            return
        if isinstance(item, Exception):
            raise item
        yield item  # type: ignore[misc]

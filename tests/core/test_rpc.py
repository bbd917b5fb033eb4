"""The server interceptor every hedui server runs: an unexpected exception becomes INTERNAL
without its text (never UNKNOWN), and admission control answers RESOURCE_EXHAUSTED at once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from hedui.core.rpc import Admission, create_server, error_details, open_channel

SERVICE = "test.Probe"


def _server(
    behaviour: Callable[..., Any], streaming: bool = False, admission: Admission | None = None
) -> tuple[grpc.Channel, object]:
    def register(server: grpc.Server) -> None:
        make = (
            grpc.unary_stream_rpc_method_handler
            if streaming
            else grpc.unary_unary_rpc_method_handler
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Call": make(behaviour)}),)
        )

    running = create_server(
        "127.0.0.1:0", tls=None, roles={SERVICE: set()}, register=[register], admission=admission
    )
    return open_channel(f"127.0.0.1:{running.port}", tls=None), running


def test_an_unexpected_exception_is_internal_without_its_text() -> None:
    def broken(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise ValueError("sqlite3.OperationalError: SELECT id_number FROM person")

    channel, running = _server(broken)
    with pytest.raises(grpc.RpcError) as info:
        channel.unary_unary(f"/{SERVICE}/Call")(b"x", timeout=5)  # type: ignore[call-arg]
    assert info.value.code() == grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
    details = str(info.value.details())  # type: ignore[attr-defined]
    assert "SELECT" not in details and "operator's log" in details
    channel.close()
    running.stop(0)  # type: ignore[attr-defined]


def test_a_stream_that_breaks_midway_is_internal_too() -> None:
    def broken(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield b"one"
        raise KeyError("raw")

    channel, running = _server(broken, streaming=True)
    got = []
    with pytest.raises(grpc.RpcError) as info:
        stream = channel.unary_stream(f"/{SERVICE}/Call")  # type: ignore[call-arg]
        for item in stream(b"x", timeout=5):
            got.append(item)
    assert got == [b"one"]
    assert info.value.code() == grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
    channel.close()
    running.stop(0)  # type: ignore[attr-defined]


def test_a_saturated_method_is_refused_at_once_and_frees_its_slot() -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(request: bytes, context: grpc.ServicerContext) -> bytes:
        entered.set()
        release.wait(10)
        return b"done"

    admission = Admission({f"/{SERVICE}/Call": 1})
    channel, running = _server(slow, admission=admission)
    call = channel.unary_unary(f"/{SERVICE}/Call")  # type: ignore[call-arg]
    first = call.future(b"1", timeout=10)
    assert entered.wait(5)
    with pytest.raises(grpc.RpcError) as info:
        call(b"2", timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert any(isinstance(d, error_details_pb2.RetryInfo) for d in error_details(info.value))
    release.set()
    assert first.result() == b"done"
    assert call(b"3", timeout=5) == b"done"  # the slot came back
    assert admission.refused == 1
    channel.close()
    running.stop(0)  # type: ignore[attr-defined]


def test_a_cancelled_call_keeps_its_slot_until_its_handler_returns() -> None:
    """Before: the slot was given back when the caller cancelled, while the handler went on
    working, so cancel-and-call again ran any number of verifications at once."""
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow(request: bytes, context: grpc.ServicerContext) -> bytes:
        if request == b"1":
            entered.set()
            release.wait(10)
            finished.set()
        return b"done"

    admission = Admission({f"/{SERVICE}/Call": 1})
    channel, running = _server(slow, admission=admission)
    call = channel.unary_unary(f"/{SERVICE}/Call")  # type: ignore[call-arg]
    first = call.future(b"1", timeout=10)
    assert entered.wait(5)
    first.cancel()  # type: ignore[no-untyped-call]
    with pytest.raises(grpc.RpcError) as info:  # its handler still runs: still saturated
        call(b"2", timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    release.set()
    assert finished.wait(5)
    for _ in range(50):  # the handler returned: the slot comes back
        try:
            assert call(b"3", timeout=5) == b"done"
            break
        except grpc.RpcError:
            threading.Event().wait(0.1)
    else:
        pytest.fail("the slot never came back")
    channel.close()
    running.stop(0)  # type: ignore[attr-defined]


def test_a_stream_abandoned_between_responses_gives_its_slot_back() -> None:
    def endless(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        while True:
            yield b"more"

    admission = Admission({f"/{SERVICE}/Call": 1})
    channel, running = _server(endless, streaming=True, admission=admission)
    stream = channel.unary_stream(f"/{SERVICE}/Call")  # type: ignore[call-arg]
    first: Any = stream(b"x", timeout=10)
    assert next(first) == b"more"
    first.cancel()
    for _ in range(50):
        second: Any = stream(b"y", timeout=10)
        try:
            assert next(second) == b"more"
            second.cancel()
            break
        except grpc.RpcError:
            threading.Event().wait(0.1)
    else:
        pytest.fail("the slot of the cancelled stream never came back")
    channel.close()
    running.stop(0)  # type: ignore[attr-defined]

"""The service's client of the household registry words a status the registry sent as its
refusal with that code, and only a call that reached nobody as "unreachable" (real gRPC)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import grpc
import pytest

from hedui.core import rpc
from hedui.core.rpc import RunningServer, create_server
from hedui.proto.v1 import connector_pb2, connector_pb2_grpc
from hedui.server.errors import SourceUnavailable
from hedui.server.fanout import Endpoint
from hedui.server.registry_client import Asked, RegistryClient

# by a monitoring handle: the registry under test never looks at it
ASKED = Asked(b"\x01" * 32, connector_pb2.Signatures(campaign="C-1", program="dibao"))


class Refusing(connector_pb2_grpc.RegistryServiceServicer):
    """A registry that ends every call with ``code`` (its own status, as every hedui server)."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self.code = code

    def GetHouseholds(
        self, request: connector_pb2.HouseholdsRequest, context: grpc.ServicerContext
    ) -> connector_pb2.HouseholdsResponse:
        rpc.abort(context, self.code, "the household register is not available")


def _serve(code: grpc.StatusCode) -> RunningServer:
    def register(server: grpc.Server) -> None:
        connector_pb2_grpc.add_RegistryServiceServicer_to_server(Refusing(code), server)

    return create_server(
        "127.0.0.1:0",
        tls=None,
        roles={"hedui.v1.RegistryService": {"service"}},
        register=[register],
        party="registry",
    )


@pytest.fixture
def free_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    yield port


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (grpc.StatusCode.UNAVAILABLE, "refused the call (UNAVAILABLE)"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "refused the call (DEADLINE_EXCEEDED)"),
        (grpc.StatusCode.INTERNAL, "failed (INTERNAL)"),
    ],
)
def test_a_status_the_registry_sent_is_its_refusal(code: grpc.StatusCode, words: str) -> None:
    server = _serve(code)
    client = RegistryClient(Endpoint("registry", f"127.0.0.1:{server.port}"), None, 5.0)
    try:
        with pytest.raises(SourceUnavailable) as info:
            client.households([ASKED], "q-refused")
        # fixed words: never the registry's own text
        assert str(info.value) == f"household registry: {words}"
    finally:
        client.close()
        server.stop(0)


def test_a_registry_nobody_answers_for_is_unreachable(free_port: int) -> None:
    client = RegistryClient(Endpoint("registry", f"127.0.0.1:{free_port}"), None, 2.0)
    try:
        with pytest.raises(SourceUnavailable) as info:
            client.households([ASKED], "q-nobody")
        assert str(info.value) == "household registry: unreachable"
    finally:
        client.close()

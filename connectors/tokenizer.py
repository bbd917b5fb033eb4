"""A connector's side of the token authority: its customers' tokens by blinded evaluation.

The connector blinds each ID number (RFC 9497 OPRF), the authority evaluates the blinded
elements without learning them, and the connector finalises the outputs into its tokens. The
connector never holds a key: to learn the token of any ID it must ask the authority online,
which counts every element against the connector's allowance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import grpc

from hedui.connectors.errors import ConnectorError
from hedui.core import oprf
from hedui.core.rpc import open_channel
from hedui.core.tls import TlsMaterial
from hedui.core.tokens import CHECK_INPUT, connector_token, key_check_value
from hedui.proto.v1 import connector_pb2, connector_pb2_grpc

CHUNK = 1024


class Tokenizer(Protocol):
    """What an import needs: the epoch, the tokens of ID numbers, and the key check value."""

    epoch: int

    def tokens(self, id_numbers: Sequence[str]) -> list[bytes]: ...
    def check_value(self) -> bytes: ...


class AuthorityTokenizer:
    """Tokens of one connector from the token authority, over mutual TLS."""

    def __init__(
        self,
        address: str,
        tls: TlsMaterial | None,
        connector_id: str,
        epoch: int,
        timeout: float = 60.0,
    ) -> None:
        self.connector_id = connector_id
        self.epoch = epoch
        self._channel = open_channel(address, tls=tls, server_name="registry")
        self._stub = connector_pb2_grpc.TokenAuthorityServiceStub(self._channel)
        self._timeout = timeout

    def _outputs(self, inputs: Sequence[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for start in range(0, len(inputs), CHUNK):
            chunk = inputs[start : start + CHUNK]
            blinded = [oprf.blind(x) for x in chunk]
            try:
                reply = self._stub.BlindEvaluate(
                    connector_pb2.BlindEvaluateRequest(
                        epoch=self.epoch, blinded_elements=[b for _, b in blinded]
                    ),
                    timeout=self._timeout,
                )
            except grpc.RpcError as e:
                code = e.code() if isinstance(e, grpc.Call) else None
                detail = e.details() if isinstance(e, grpc.Call) else ""
                if code in (
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    grpc.StatusCode.FAILED_PRECONDITION,
                ):
                    raise ConnectorError(f"the token authority refused: {detail}") from None
                raise ConnectorError(
                    f"the token authority is not reachable ({code.name if code else 'error'}); "
                    "an import needs the running deployment (`hedui up`)"
                ) from None
            if len(reply.evaluated_elements) != len(chunk) or reply.epoch != self.epoch:
                raise ConnectorError("the token authority's answer does not match the request")
            out += [
                oprf.finalize(x, blind, bytes(e))
                for x, (blind, _), e in zip(chunk, blinded, reply.evaluated_elements, strict=True)
            ]
        return out

    def tokens(self, id_numbers: Sequence[str]) -> list[bytes]:
        outputs = self._outputs([i.encode("ascii") for i in id_numbers])
        return [connector_token(y, self.connector_id) for y in outputs]

    def check_value(self) -> bytes:
        (y,) = self._outputs([CHECK_INPUT])
        return key_check_value(y, self.connector_id)

    def close(self) -> None:
        self._channel.close()

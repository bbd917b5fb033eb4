"""The connector SDK: answer a query with one signed, freshly encrypted total per field.

A bank or department implements :class:`HoldingSource` over its own data (the reference
connectors use :class:`hedui.connectors.store.HoldingStore`) and serves
:class:`ConnectorServicer`. The SDK enforces the privacy contract: every queried token is
answered (a token the source does not hold adds 0), the household is summed before encryption,
all fields are packed into their slots of the query's layout and encrypted once with fresh
randomness, and the answer is signed over the query id, the tokens and the layout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.exc import SQLAlchemyError

from hedui.connectors.errors import ConnectorError
from hedui.core import packing, rpc, signing
from hedui.core.deployment import ConnectorKind
from hedui.core.errors import CryptoError
from hedui.core.packing import BatchLayout, Layout
from hedui.core.paillier import PublicKey
from hedui.proto.v1 import connector_pb2, connector_pb2_grpc

log = logging.getLogger("hedui.connectors")
_T = TypeVar("_T")

MAX_TOKENS = 64
MAX_BATCH = 1024
TOKEN_BYTES = 32
MAX_QUERY_ID = 128


class HoldingSource(Protocol):
    def sums(self, tokens: Sequence[bytes], fields: Iterable[str]) -> dict[str, int]: ...
    def sums_many(
        self, households: Sequence[Sequence[bytes]], fields: Iterable[str]
    ) -> list[dict[str, int]]: ...


class Answerer:
    """Builds a connector's signed answer; independent of gRPC so it can be tested directly."""

    def __init__(
        self,
        connector_id: str,
        kind: ConnectorKind,
        source: HoldingSource,
        public_key: PublicKey,
        signing_key: Ed25519PrivateKey,
        token_key_check: bytes,
    ) -> None:
        self.connector_id = connector_id
        self.kind = kind
        self._source = source
        self._public = public_key
        self._signing_key = signing_key
        self._token_key_check = token_key_check
        self._description: connector_pb2.DescribeResponse | None = None

    def describe(self) -> connector_pb2.DescribeResponse:
        if self._description is None:
            self._description = self._describe()
        return self._description

    def _describe(self) -> connector_pb2.DescribeResponse:
        return connector_pb2.DescribeResponse(
            connector_id=self.connector_id,
            kind=self.kind.kind,
            display_name=self.kind.display_name,
            is_bank=self.kind.is_bank,
            fields=[
                connector_pb2.FieldDescription(
                    name=f.name, unit=f.unit, description=f.description, max_value=f.max_value
                )
                for f in self.kind.fields
            ],
            key_fingerprint=self._public.fingerprint,
            signing_public_key=signing.public_key_to_pem(self._signing_key.public_key()),
            token_key_check=self._token_key_check,
        )

    def answer(
        self, query_id: str, tokens: Sequence[bytes], layout: Layout
    ) -> connector_pb2.QueryResponse:
        """Sum the household's rows, pack every field into its slot, encrypt once, sign."""
        totals = self._source.sums(tokens, self.kind.field_names)
        for f in self.kind.fields:
            if totals[f.name] > f.max_value:
                raise AnswerRefused(
                    f"the household total of {f.name} is above the declared maximum {f.max_value}"
                )
        try:
            plaintext = layout.pack(totals)
        except CryptoError as e:
            raise AnswerRefused(f"the query's slot layout cannot hold this answer: {e}") from None
        packed = self._public.to_bytes(self._public.encrypt(plaintext))
        signed = signing.answer_bytes(
            query_id,
            self.connector_id,
            self._public.fingerprint,
            signing.tokens_digest(tokens),
            layout.digest(),
            packed,
        )
        return connector_pb2.QueryResponse(
            connector_id=self.connector_id,
            key_fingerprint=self._public.fingerprint,
            packed=packed,
            signature=signing.sign(self._signing_key, signed),
        )


class AnswerRefused(ConnectorError):
    """An answer that cannot be given without breaking the declared limits."""


def answer_batch(
    answerer: Answerer, query_id: str, households: Sequence[Sequence[bytes]], layout: BatchLayout
) -> connector_pb2.QueryBatchResponse:
    """Every household's totals, ``layout.per_ciphertext`` households to a ciphertext, signed."""
    a = answerer
    totals = a._source.sums_many(households, a.kind.field_names)
    for f in a.kind.fields:
        if any(t[f.name] > f.max_value for t in totals):
            raise AnswerRefused(
                f"a household total of {f.name} is above the declared maximum {f.max_value}"
            )
    try:
        plaintexts = layout.pack(list(totals))
    except CryptoError as e:
        raise AnswerRefused(f"the batch layout cannot hold this answer: {e}") from None
    packed = [a._public.to_bytes(a._public.encrypt(m)) for m in plaintexts]
    queried, ciphertexts = signing.batch_digests(households, packed)
    signed = signing.answer_bytes(
        query_id, a.connector_id, a._public.fingerprint, queried, layout.digest(), ciphertexts
    )
    return connector_pb2.QueryBatchResponse(
        connector_id=a.connector_id,
        key_fingerprint=a._public.fingerprint,
        packed=packed,
        signature=signing.sign(a._signing_key, signed),
    )


class ConnectorServicer(connector_pb2_grpc.ConnectorServiceServicer):
    def __init__(self, answerer: Answerer) -> None:
        self._answerer = answerer
        self._known_layouts: dict[tuple[tuple[str, int, int, int], ...], Layout] = {}

    def Describe(
        self, request: connector_pb2.DescribeRequest, context: grpc.ServicerContext
    ) -> connector_pb2.DescribeResponse:
        return self._answerer.describe()

    def _check_common(
        self, query_id: str, fingerprint: bytes, context: grpc.ServicerContext
    ) -> None:
        if not query_id or len(query_id) > MAX_QUERY_ID:
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "query_id is required",
                rpc.bad_request("query_id", f"1 to {MAX_QUERY_ID} characters"),
            )
        pinned = self._answerer.describe().key_fingerprint
        if fingerprint != pinned:
            rpc.abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                "this connector encrypts only under the custodian's pinned public key",
                rpc.precondition_failure(
                    "PAILLIER_KEY",
                    "key_fingerprint",
                    f"expected {pinned.hex()}, got {fingerprint.hex()}",
                ),
            )

    def QueryBatch(
        self, request: connector_pb2.QueryBatchRequest, context: grpc.ServicerContext
    ) -> connector_pb2.QueryBatchResponse:
        self._check_common(request.query_id, request.key_fingerprint, context)
        households = [list(h.tokens) for h in request.households]
        if not 1 <= len(households) <= MAX_BATCH or any(
            not 1 <= len(h) <= MAX_TOKENS or any(len(t) != TOKEN_BYTES for t in h)
            for h in households
        ):
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "malformed batch",
                rpc.bad_request(
                    "households", f"1 to {MAX_BATCH} households of 1 to {MAX_TOKENS} 32-byte tokens"
                ),
            )
        try:
            lay = request.layout
            layout = packing.batch_from_wire(
                ((s.field, s.offset, s.bits, s.max_total) for s in lay.slots),
                lay.stride,
                lay.per_ciphertext,
            )
        except CryptoError as e:
            rpc.abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, str(e), rpc.bad_request("layout", str(e))
            )
        return self._answering(
            context, lambda: answer_batch(self._answerer, request.query_id, households, layout)
        )

    def _answering(self, context: grpc.ServicerContext, produce: Callable[[], _T]) -> _T:
        """Make an answer; a refusal or a database failure becomes its status code."""
        try:
            return produce()
        except AnswerRefused as e:
            rpc.abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                str(e),
                rpc.precondition_failure("DECLARED_MAXIMUM", self._answerer.connector_id, str(e)),
            )
        except SQLAlchemyError as e:
            log.error("connector database error: %s", type(e).__name__)
            rpc.abort(context, grpc.StatusCode.INTERNAL, "this connector's data is not available")

    def _layout(self, request: connector_pb2.QueryRequest) -> Layout:
        """The query's slot layout, checked once and then remembered (it rarely changes)."""
        wire = tuple((s.field, s.offset, s.bits, s.max_total) for s in request.layout)
        layout = self._known_layouts.get(wire)
        if layout is None:
            layout = packing.from_wire(wire)
            if len(self._known_layouts) > 16:
                self._known_layouts.clear()
            self._known_layouts[wire] = layout
        return layout

    def Query(
        self, request: connector_pb2.QueryRequest, context: grpc.ServicerContext
    ) -> connector_pb2.QueryResponse:
        self._check_common(request.query_id, request.key_fingerprint, context)
        if not 1 <= len(request.tokens) <= MAX_TOKENS:
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "a query holds 1 to 64 tokens",
                rpc.bad_request(
                    "tokens", f"{len(request.tokens)} tokens; 1 to {MAX_TOKENS} allowed"
                ),
            )
        if any(len(t) != TOKEN_BYTES for t in request.tokens):
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "tokens are 32 bytes",
                rpc.bad_request("tokens", "every token is an HMAC-SHA256 of 32 bytes"),
            )
        try:
            layout = self._layout(request)
        except CryptoError as e:
            rpc.abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, str(e), rpc.bad_request("layout", str(e))
            )
        return self._answering(
            context, lambda: self._answerer.answer(request.query_id, list(request.tokens), layout)
        )

"""The connector SDK: answer a query with signed, freshly encrypted household totals.

A bank or department implements :class:`HoldingSource` over its own data (the reference
connectors use :class:`hedui.connectors.store.HoldingStore`) and serves
:class:`ConnectorServicer`. The SDK enforces the privacy contract: every queried token is
answered (a token the source does not hold adds 0), each household is summed before encryption,
its fields are packed into their slots of the query's layout (several households to a
plaintext), every plaintext is encrypted with fresh randomness, and the answer is signed over
the query id, the tokens, the layout and the ciphertexts. A household it cannot give a figure
for (a stored row that fails its seal, a total above its declared maximum) is *marked*: its
slots are zero and the mark is signed with the answer, so the damage stays with that household
while the others of the batch are answered (:mod:`hedui.core.answers`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn, Protocol, TypeVar

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy.exc import SQLAlchemyError

from hedui.connectors.errors import ConnectorError
from hedui.connectors.integrity import DataIntegrityError
from hedui.core import answers, grants, packing, rpc, signing
from hedui.core.clock import DEPLOYMENT, Clock
from hedui.core.deployment import ConnectorKind
from hedui.core.errors import CryptoError
from hedui.core.grants import GRANT_TTL_MS, MAX_BATCH, PAD, Grant
from hedui.core.packing import BatchLayout
from hedui.core.paillier import PublicKey
from hedui.core.selectors import selected_sums
from hedui.proto.v1 import connector_pb2, connector_pb2_grpc

log = logging.getLogger("hedui.connectors")
_T = TypeVar("_T")

MAX_TOKENS = packing.MAX_ROWS  # with decoys, the residents of a group of households (issue #26)
TOKEN_BYTES = 32
MAX_QUERY_ID = 128


class HoldingSource(Protocol):
    def sums_many(
        self, households: Sequence[Sequence[bytes]], fields: Iterable[str]
    ) -> list[dict[str, int]]: ...
    def first_answer(self, query_id: str, time_ms: int, keep_ms: int) -> bool: ...


class GrantRefused(ConnectorError):
    """A query the token authority's grant does not cover; ``kind`` names the check."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class GrantPolicy:
    """How a connector checks grants: the authority's pinned key, the epoch of its data."""

    authority_key: Ed25519PublicKey
    epoch: int
    clock: Clock = DEPLOYMENT


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
        grants: GrantPolicy,
    ) -> None:
        self.connector_id = connector_id
        self.kind = kind
        self._source = source
        self._public = public_key
        self._signing_key = signing_key
        self._token_key_check = token_key_check
        self._grants = grants
        self._description: connector_pb2.DescribeResponse | None = None

    @property
    def plaintext_bits(self) -> int:
        """The largest plaintext the custodian's key encrypts, in bits: every layout's bound."""
        return self._public.max_plaintext_bits

    def check_grant(
        self,
        query_id: str,
        pb: connector_pb2.TokenGrant,
        digest: bytes,
        households: int,
        placement: tuple[int, int] | None = None,
    ) -> None:
        """Refuse unless the authority granted exactly these tokens to this connector, for this
        query id, in this epoch, recently, and the query id was never answered before; with
        decoys, also unless it made the selectors for the query layout's ``placement``
        (household stride, households per ciphertext): others would land in wrong slots."""
        policy = self._grants
        grant = Grant.from_pb(pb)
        try:
            grants.verify(policy.authority_key, grant)
        except CryptoError:
            raise GrantRefused(
                "GRANT", "the query carries no valid grant of the token authority"
            ) from None
        if grant.query_id != query_id or grant.households != households:
            raise GrantRefused("GRANT", "the grant is for another query")
        if grant.epoch != policy.epoch:
            raise GrantRefused(
                "TOKEN_EPOCH",
                f"this connector's data is of token epoch {policy.epoch}, the query is of epoch "
                f"{grant.epoch}; its data must be imported again",
            )
        if grant.digest_for(self.connector_id) != digest:
            raise GrantRefused(
                "GRANT", "the queried tokens are not the ones granted to this connector"
            )
        if placement is not None and grant.placement != placement:
            raise GrantRefused(
                "GRANT",
                "the selectors were made for households of {} bits, {} to a ciphertext; the "
                "query's layout has {} and {}".format(*grant.placement, *placement),
            )
        now_ms = int(policy.clock.now().timestamp() * 1000)
        if not -60_000 <= now_ms - grant.issued_unix_ms <= GRANT_TTL_MS:
            raise GrantRefused("GRANT", "the grant has expired")
        if not self._source.first_answer(query_id, now_ms, 24 * 3600 * 1000):
            raise GrantRefused("REPLAY", "this query id was answered before")

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
            token_epoch=self._grants.epoch,
        )

    @property
    def ciphertext_bytes(self) -> int:
        return self._public.ciphertext_bytes

    def answer(
        self,
        query_id: str,
        households: Sequence[Sequence[bytes]],
        layout: BatchLayout,
        selectors: Sequence[Sequence[bytes]] = (),
        queried: bytes = b"",
    ) -> connector_pb2.QueryBatchResponse:
        """Every household's totals, ``layout.per_ciphertext`` households to a plaintext, each
        plaintext encrypted with fresh randomness, the whole answer signed once. A household
        whose stored rows fail their seal, or with a total above its field's declared maximum,
        is marked (its slots zero); when that is every household, the query is refused.

        With decoys (``selectors``, one per token: issue #26), the answer is the selected sum
        of :mod:`hedui.core.selectors`: the members' rows only, though this connector cannot
        tell them from the decoys' (a damaged row is counted under encryption: see
        :meth:`_selected_answer`)."""
        if any(selectors):
            return self._selected_answer(query_id, households, layout, selectors, queried)
        names = self.kind.field_names
        marks: dict[int, int] = {}  # household index -> cause
        damaged: list[str] = []  # the damaged rows, by field and token prefix
        try:
            totals = self._source.sums_many(households, names)
        except DataIntegrityError as e:
            if e.sums is None or not e.households:
                raise  # a source that cannot tell the households apart: refuse the query
            totals, damaged = e.sums, e.rows
            marks.update(dict.fromkeys(e.households, answers.DATA_INTEGRITY))
        above: set[str] = set()  # the fields with a total above their declared maximum
        for i, t in enumerate(totals):
            over = [f.name for f in self.kind.fields if t[f.name] > f.max_value]
            if over and i not in marks:
                marks[i] = answers.DECLARED_MAXIMUM
                above.update(over)
        if len(marks) == len(households):  # nothing left to answer: refuse, as before
            if damaged:
                raise DataIntegrityError(
                    f"{len(damaged)} stored row(s) fail their integrity check", damaged
                )
            raise AnswerRefused(
                f"a household total of {', '.join(sorted(above))} is above the declared maximum"
            )
        if damaged:
            log.error(
                "%s marked %d of %d household(s): stored rows fail their integrity check: %s",
                self.connector_id,
                sum(c == answers.DATA_INTEGRITY for c in marks.values()),
                len(households),
                "; ".join(damaged[:10]),
            )
        if above:
            log.warning(
                "%s marked %d of %d household(s): a total of %s is above the declared maximum",
                self.connector_id,
                sum(c == answers.DECLARED_MAXIMUM for c in marks.values()),
                len(households),
                ", ".join(sorted(above)),
            )
        for i in marks:
            totals[i] = dict.fromkeys(names, 0)
        marked = sorted(marks.items())
        try:
            plaintexts = layout.pack(list(totals))
        except CryptoError as e:
            raise AnswerRefused(f"the query's layout cannot hold this answer: {e}") from None
        packed = [self._public.to_bytes(self._public.encrypt(m)) for m in plaintexts]
        return self._signed(query_id, households, (), layout, packed, marked, queried)

    def _selected_answer(
        self,
        query_id: str,
        households: Sequence[Sequence[bytes]],
        layout: BatchLayout,
        selectors: Sequence[Sequence[bytes]],
        queried: bytes = b"",
    ) -> connector_pb2.QueryBatchResponse:
        """The selected sums: each household's members' rows, which this connector cannot tell
        from its decoys'. A damaged row (failing its seal) is counted in the household's
        :data:`~hedui.core.packing.DAMAGED` slot under its own selector, so only the household
        it is a member of loses the kind's figure; a household whose tokens' rows together
        exceed a field's declared maximum is marked (the members' sum could not be vouched for,
        and the group's rows are the same whichever household of it is asked about)."""
        if layout.damaged is None:  # a service older than the slot: damage would mark decoys
            raise AnswerRefused(
                "the query's layout has no damaged_rows slot, which answers with decoys need: "
                "upgrade the verification service"
            )
        names = self.kind.field_names
        tokens = [
            (h, t, s)
            for h, (ts, ss) in enumerate(zip(households, selectors, strict=True))
            for t, s in zip(ts, ss or [b""] * len(ts), strict=True)
        ]
        marks: dict[int, int] = {}
        damaged: set[int] = set()  # the tokens (indices) whose stored rows fail their seal
        try:
            rows = self._source.sums_many([[t] for _, t, _ in tokens], names)
        except DataIntegrityError as e:
            if e.sums is None or not e.households:
                raise
            rows, damaged = e.sums, set(e.households)
            log.error(
                "%s: %d stored row(s) fail their integrity check, in the lists of %d of %d "
                "household(s) (counted for the members' households under encryption): %s",
                self.connector_id,
                len(e.rows),
                len({tokens[i][0] for i in damaged}),
                len(households),
                "; ".join(e.rows[:10]),
            )
        group = [dict.fromkeys(names, 0) for _ in households]  # every token's rows, per household
        for (h, _, _), row in zip(tokens, rows, strict=True):
            for f in names:
                group[h][f] += row[f]
        limits = {f.name: f.max_value for f in self.kind.fields}
        for h, total in enumerate(group):
            if h not in marks and any(total[f] > limits[f] for f in names):
                marks[h] = answers.DECLARED_MAXIMUM
        if len(marks) == len(households):
            raise AnswerRefused("no household of the query can be answered")
        held: list[list[tuple[bytes, Mapping[str, int]]]] = [[] for _ in households]
        for i, ((h, _, selector), row) in enumerate(zip(tokens, rows, strict=True)):
            if h in marks:
                continue
            if i in damaged:
                held[h].append((selector, {packing.DAMAGED: 1}))
            elif any(row.values()):
                held[h].append((selector, row))
        try:
            packed = [self._public.to_bytes(c) for c in selected_sums(self._public, layout, held)]
        except CryptoError as e:
            raise AnswerRefused(f"the query's selectors or layout cannot be used: {e}") from None
        # a household whose list holds a damaged row: declared, signed, so that the custodian
        # names this connector for a count (the same for every household of the group)
        counted = dict.fromkeys(
            {tokens[i][0] for i in damaged} - marks.keys(), answers.DAMAGED_COUNTED
        )
        marked = sorted({**marks, **counted}.items())
        return self._signed(query_id, households, selectors, layout, packed, marked, queried)

    def _signed(
        self,
        query_id: str,
        households: Sequence[Sequence[bytes]],
        selectors: Sequence[Sequence[bytes]],
        layout: BatchLayout,
        packed: list[bytes],
        marked: list[tuple[int, int]],
        queried: bytes = b"",
    ) -> connector_pb2.QueryBatchResponse:
        """The answer signed; ``queried``: the tokens' digest when the caller has it already."""
        queried = queried or signing.batch_queried(households, selectors)
        ciphertexts = signing.ciphertexts_digest(packed)
        signed = signing.answer_bytes(
            query_id,
            self.connector_id,
            self._public.fingerprint,
            queried,
            layout.digest(),
            ciphertexts,
            signing.marks_digest(marked),
        )
        return connector_pb2.QueryBatchResponse(
            connector_id=self.connector_id,
            key_fingerprint=self._public.fingerprint,
            packed=packed,
            signature=signing.sign(self._signing_key, signed),
            marked=answers.marks_pb(marked),
        )


class AnswerRefused(ConnectorError):
    """An answer that cannot be given without breaking the declared limits."""


class ConnectorServicer(connector_pb2_grpc.ConnectorServiceServicer):
    def __init__(self, answerer: Answerer, broken: str | None = None) -> None:
        self._answerer = answerer
        self._broken = broken  # the data set's seal failed at start: refuse every query

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
        selectors = [list(h.selectors) for h in request.households]
        size = self._answerer.ciphertext_bytes
        if not 1 <= len(households) <= MAX_BATCH or any(
            not PAD <= len(h) <= MAX_TOKENS
            or len(h) % PAD
            or any(len(t) != TOKEN_BYTES for t in h)
            or len(c) not in (0, len(h))
            or any(len(x) != size for x in c)
            for h, c in zip(households, selectors, strict=True)
        ):
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "malformed batch",
                rpc.bad_request(
                    "households",
                    f"1 to {MAX_BATCH} households of {PAD} to {MAX_TOKENS} 32-byte tokens, "
                    f"each with a {size}-byte selector or none",
                ),
            )
        try:
            lay = request.layout
            layout = packing.batch_from_wire(
                ((s.field, s.offset, s.bits, s.max_total) for s in lay.slots),
                lay.stride,
                lay.per_ciphertext,
                self._answerer.plaintext_bits,
            )
        except CryptoError as e:
            rpc.abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, str(e), rpc.bad_request("layout", str(e))
            )

        def produce() -> connector_pb2.QueryBatchResponse:
            a = self._answerer
            queried = signing.batch_queried(households, selectors)
            a.check_grant(
                request.query_id,
                request.grant,
                queried,
                len(households),
                (layout.stride, layout.per_ciphertext) if any(selectors) else None,
            )
            return a.answer(request.query_id, households, layout, selectors, queried)

        return self._answering(context, produce)

    def _answering(self, context: grpc.ServicerContext, produce: Callable[[], _T]) -> _T:
        """Make an answer; a refusal or a database failure becomes its status code."""
        if self._broken is not None:
            self._refuse_damaged(context, [self._broken])
        try:
            return produce()
        except DataIntegrityError as e:
            self._refuse_damaged(context, e.rows)
        except AnswerRefused as e:
            rpc.abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                str(e),
                rpc.precondition_failure("DECLARED_MAXIMUM", self._answerer.connector_id, str(e)),
            )
        except GrantRefused as e:
            log.warning("refused a query: %s", e.kind)
            rpc.abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                str(e),
                rpc.precondition_failure(e.kind, self._answerer.connector_id, str(e)),
            )
        except SQLAlchemyError as e:
            log.error("connector database error: %s", type(e).__name__)
            rpc.abort(context, grpc.StatusCode.INTERNAL, "this connector's data is not available")

    def _refuse_damaged(self, context: grpc.ServicerContext, rows: Sequence[str]) -> NoReturn:
        cid = self._answerer.connector_id
        log.error(
            "%s refused a query: stored rows fail their integrity check: %s",
            cid,
            "; ".join(rows[:10]),
        )
        rpc.abort(
            context,
            grpc.StatusCode.FAILED_PRECONDITION,
            f"{cid}: its stored data fails its integrity check; it does not answer altered figures",
            rpc.precondition_failure("DATA_INTEGRITY", cid, f"{len(rows)} damaged row(s)"),
        )

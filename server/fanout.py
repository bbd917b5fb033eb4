"""Concurrent queries to every connector about one or many households, each with a deadline.

Nothing a connector sends is trusted: its layout comes from its ``Describe`` (checked against
the pinned signing key and the custodian's Paillier key), and each answer must name the right
connector and key, carry exactly the declared fields as well-formed ciphertexts, and verify
under the connector's pinned Ed25519 key. Anything else is a named failure, never a zero.
A household a connector marked (no figure: a stored row fails its seal, a total above its
declared maximum) is that connector's failure for that household alone (:meth:`FanOut.failures_of`);
the mark is signed, and the custodian refuses the connector's kind for the household.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hedui.core import metrics, packing, signing
from hedui.core.answers import (
    DATA_INTEGRITY,
    DECLARED_MAXIMUM,
    BatchAnswer,
    check_marks,
    marks_from_pb,
)
from hedui.core.deployment import kind_of
from hedui.core.errors import CryptoError
from hedui.core.grants import Grant
from hedui.core.packing import BatchLayout
from hedui.core.paillier import PublicKey
from hedui.core.rpc import error_details, open_channel
from hedui.core.tls import TlsMaterial
from hedui.proto.v1 import connector_pb2, connector_pb2_grpc


@dataclass(frozen=True)
class Endpoint:
    connector_id: str
    address: str


@dataclass(frozen=True)
class Declared:
    """What a connector's Describe declares."""

    fields: tuple[str, ...]


@dataclass(frozen=True)
class FanOut:
    answers: tuple[BatchAnswer, ...]
    failures: Mapping[str, str]  # connector id -> reason

    def failures_of(self, household: int) -> dict[str, str]:
        """The failures that concern one household of the query (its index): every connector
        that failed the whole query, and every one that marked this household, in the words a
        refusal of the whole query would have had."""
        out = dict(self.failures)
        for a in self.answers:
            for index, cause in a.marked:
                if index == household and cause in _MARKED:  # a counted row is the custodian's
                    out[a.connector_id] = _MARKED[cause]
        return out


def call_timeout(timeout: float, households: int) -> float:
    """The deadline of a call about ``households``: ``timeout`` for one, growing to four times
    that for a campaign's chunk (a connector sums and encrypts them all in the call)."""
    return timeout * min(4.0, 1.0 + (households - 1) / 40)


_REFUSALS = {  # a connector's precondition type -> what the verdict says (fixed words only)
    "TOKEN_EPOCH": "refused the query: its data is of another token epoch; import it again",
    "GRANT": "refused the query: the token grant does not cover it",
    "REPLAY": "refused the query: the query id was answered before",
    "PAILLIER_KEY": "refused the query: it encrypts under another Paillier key",
    "DECLARED_MAXIMUM": "refused the query: a total is above its declared maximum",
    "DATA_INTEGRITY": "refused the query: its stored data fails its integrity check",
}
_MARKED = {  # a mark's cause -> the words of a refusal for the same reason
    DATA_INTEGRITY: _REFUSALS["DATA_INTEGRITY"],
    DECLARED_MAXIMUM: _REFUSALS["DECLARED_MAXIMUM"],
}


def failure_reason(error: grpc.RpcError, timeout: float) -> str:
    """A fixed description of a failed call: a source's own error text is never passed on
    (it could hold anything, and it would reach the intake and the audit log)."""
    code = error.code() if isinstance(error, grpc.Call) else None
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no answer within {timeout:g} s"
    if code == grpc.StatusCode.UNAVAILABLE:
        return "unreachable"
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return "refused the service's certificate"
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        for detail in error_details(error):
            for v in getattr(detail, "violations", ()):
                if getattr(v, "type", "") in _REFUSALS:
                    return _REFUSALS[v.type]
        return "refused the query"
    return f"failed ({code.name if code else 'no status'})"


class ConnectorPool:
    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        tls: TlsMaterial | None,
        verify_keys: Mapping[str, Ed25519PublicKey],
        public_key: PublicKey,
        timeout: float,
        layouts: Mapping[str, BatchLayout],
    ) -> None:
        self._endpoints = {e.connector_id: e for e in endpoints}
        self._channels = {
            e.connector_id: open_channel(e.address, tls=tls, server_name=e.connector_id)
            for e in endpoints
        }
        self._stubs = {
            cid: connector_pb2_grpc.ConnectorServiceStub(ch) for cid, ch in self._channels.items()
        }
        self._verify_keys = dict(verify_keys)
        self._public = public_key
        self._timeout = timeout
        self._declared: dict[str, Declared] = {}
        # each connector answers in the layout of its kind only: the custodian sums and decrypts
        # kind by kind, so no connector can reach into another kind's slots
        self.layouts = dict(layouts)
        self._wire_layouts = {k: packing.batch_layout_pb(v) for k, v in self.layouts.items()}

    @property
    def connector_ids(self) -> tuple[str, ...]:
        return tuple(self._endpoints)

    def declared(self, connector_id: str) -> Declared | None:
        return self._declared.get(connector_id)

    def _check_describe(self, cid: str, d: connector_pb2.DescribeResponse) -> Declared:
        if d.connector_id != cid:
            raise CryptoError(f"it describes itself as {d.connector_id!r}")
        if d.key_fingerprint != self._public.fingerprint:
            raise CryptoError("it encrypts under another Paillier key")
        pinned = signing.public_key_to_pem(self._verify_keys[cid])
        if d.signing_public_key != pinned:
            raise CryptoError("its signing key is not the pinned one")
        names = tuple(f.name for f in d.fields)
        if not names or len(set(names)) != len(names):
            raise CryptoError("it declares no fields or a field twice")
        own = {f.name: f.max_value for f in kind_of(cid).fields}
        for f in d.fields:
            if f.name not in own or f.max_value > own[f.name]:
                raise CryptoError(f"its field {f.name} is not declared as the deployment expects")
        return Declared(names)

    def describe_missing(self, failures: dict[str, str]) -> None:
        pending = {
            cid: self._stubs[cid].Describe.future(
                connector_pb2.DescribeRequest(), timeout=self._timeout
            )
            for cid in self._endpoints
            if cid not in self._declared
        }
        for cid, fut in pending.items():
            try:
                self._declared[cid] = self._check_describe(cid, fut.result())
            except grpc.RpcError as e:
                failures[cid] = failure_reason(e, self._timeout)
            except CryptoError as e:
                failures[cid] = f"invalid description: {e}"

    def _check_answer(
        self,
        cid: str,
        query_id: str,
        tokens: Sequence[Sequence[bytes]],
        selectors: Sequence[Sequence[bytes]],
        r: connector_pb2.QueryBatchResponse,
    ) -> BatchAnswer:
        kind = kind_of(cid).kind
        layout = self.layouts[kind]
        if r.connector_id != cid or len(r.packed) != layout.ciphertexts(len(tokens)):
            raise CryptoError("its answer has the wrong shape")
        for c in r.packed:
            self._public.from_bytes(c, r.key_fingerprint)
        marked = marks_from_pb(r.marked)
        check_marks(marked, len(tokens))
        queried, ciphertexts = signing.batch_digests(tokens, list(r.packed), selectors)
        answer = BatchAnswer(
            cid, kind, tuple(r.packed), r.signature, r.key_fingerprint, queried, ciphertexts, marked
        )
        signing.verify(
            self._verify_keys[cid], answer.signed_bytes(query_id, layout.digest()), r.signature
        )
        return answer

    def query(
        self,
        query_id: str,
        households: Sequence[Mapping[str, Sequence[bytes]]],
        grant: Grant,
        selected: Sequence[Mapping[str, Sequence[bytes]]] = (),
    ) -> FanOut:
        """Ask every connector about the tokens the token authority granted it for every
        household, in one call per connector, under the grant; with decoys, each token with
        its encrypted selector (``selected``: per household, per connector)."""
        failures: dict[str, str] = {}
        self.describe_missing(failures)
        timeout = call_timeout(self._timeout, len(households))
        futures, queried, chosen = {}, {}, {}
        wire_grant = grant.for_connectors()  # not the bindings: they name who is asked about
        for cid in self._endpoints:
            if cid in failures:
                continue
            if any(cid not in h for h in households):
                failures[cid] = "the token authority granted no tokens for it"
                continue
            tokens = [list(h[cid]) for h in households]
            selectors = [list(s.get(cid, ())) for s in selected] or [[] for _ in tokens]
            queried[cid], chosen[cid] = tokens, selectors
            request = connector_pb2.QueryBatchRequest(
                query_id=query_id,
                households=[
                    connector_pb2.TokenSet(tokens=t, selectors=c)
                    for t, c in zip(tokens, selectors, strict=True)
                ],
                key_fingerprint=self._public.fingerprint,
                layout=self._wire_layouts[kind_of(cid).kind],
                grant=wire_grant,
            )
            futures[cid] = self._stubs[cid].QueryBatch.future(request, timeout=timeout)
        answers = []
        for cid, fut in futures.items():
            try:
                answers.append(
                    self._check_answer(cid, query_id, queried[cid], chosen[cid], fut.result())
                )
            except grpc.RpcError as e:
                failures[cid] = failure_reason(e, timeout)
            except CryptoError as e:
                failures[cid] = f"invalid answer: {e}"
        for cid in futures:
            metrics.CONNECTOR_ANSWERS.labels(cid, "failed" if cid in failures else "answered").inc()
        return FanOut(tuple(answers), failures)

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()

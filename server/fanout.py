"""Concurrent queries to the registry and to every connector, each with a deadline.

Nothing a connector sends is trusted: its layout comes from its ``Describe`` (checked against
the pinned signing key and the custodian's Paillier key), and each answer must name the right
connector and key, carry exactly the declared fields as well-formed ciphertexts, and verify
under the connector's pinned Ed25519 key. Anything else is a named failure, never a zero.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hedui.core import metrics, packing, signing
from hedui.core.answers import BatchAnswer, SignedAnswer
from hedui.core.clock import DEPLOYMENT, Clock
from hedui.core.deployment import kind_of
from hedui.core.errors import CryptoError
from hedui.core.grants import Grant
from hedui.core.packing import BatchLayout, Layout
from hedui.core.paillier import PublicKey
from hedui.core.resident_id import ResidentId
from hedui.core.rpc import error_details, open_channel
from hedui.core.tls import TlsMaterial
from hedui.proto.v1 import connector_pb2, connector_pb2_grpc
from hedui.server.consent import ConsentRefused, unsigned_members
from hedui.server.errors import ServiceError
from hedui.server.policy.engine import Member

_RELATIONS = {v: k.lower() for k, v in connector_pb2.Relation.items() if v}
_MASKED = re.compile(r"[0-9]{3}\*{14}[0-9X]")


@dataclass(frozen=True)
class Endpoint:
    connector_id: str
    address: str


@dataclass(frozen=True)
class Declared:
    """What a connector's Describe declares."""

    fields: tuple[str, ...]


@dataclass(frozen=True)
class BatchFanOut:
    answers: tuple[BatchAnswer, ...]
    failures: Mapping[str, str]


@dataclass(frozen=True)
class FanOutResult:
    answers: tuple[SignedAnswer, ...]
    failures: Mapping[str, str]  # connector id -> reason


class RegistryNotFound(ServiceError):
    pass


class SourceUnavailable(ServiceError):
    pass


class MonitoringRefused(ServiceError):
    """The registry refused a monitoring handle (past its date, not its own) or its issue."""


_REFUSALS = {  # a connector's precondition type -> what the verdict says (fixed words only)
    "TOKEN_EPOCH": "refused the query: its data is of another token epoch; import it again",
    "GRANT": "refused the query: the token grant does not cover it",
    "REPLAY": "refused the query: the query id was answered before",
    "PAILLIER_KEY": "refused the query: it encrypts under another Paillier key",
    "DECLARED_MAXIMUM": "refused the query: a total is above its declared maximum",
    "DATA_INTEGRITY": "refused the query: its stored data fails its integrity check",
}


def _reason(error: grpc.RpcError, timeout: float) -> str:
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


@dataclass(frozen=True)
class GrantedHousehold:
    """A household as the registry answers it: members without ID numbers, and every
    connector's padded tokens under the token authority's grant."""

    members: list[Member]
    tokens: Mapping[str, list[bytes]]
    pseudonym: bytes = b""  # the registry's keyed name for the household (case numbers)
    district: str = ""  # its county-level district in the register (alerts go there)
    handle: bytes = b""  # a monitoring handle, when one was asked for


class RegistryClient:
    def __init__(
        self,
        endpoint: Endpoint,
        tls: TlsMaterial | None,
        timeout: float,
        clock: Clock = DEPLOYMENT,
    ) -> None:
        self._clock = clock
        self.channel = open_channel(endpoint.address, tls=tls, server_name=endpoint.connector_id)
        self._stub = connector_pb2_grpc.RegistryServiceStub(self.channel)
        self._timeout = timeout

    def household(
        self,
        resident: ResidentId | bytes,
        query_id: str,
        signatures: connector_pb2.Signatures,
        monitor_until: dt.date | None = None,
    ) -> tuple[GrantedHousehold, Grant]:
        """The household of an ID number or of a monitoring handle the registry issued, and its
        grant; ConsentRefused when an adult member did not sign. With ``monitor_until`` the
        registry also issues a monitoring handle for the applicant."""
        request = connector_pb2.HouseholdRequest(query_id=query_id, signatures=signatures)
        if isinstance(resident, ResidentId):
            request.id_number = resident.value
        else:
            request.monitoring_handle = resident
        if monitor_until is not None:
            request.monitor_until = monitor_until.isoformat()
        try:
            reply = self._stub.GetHousehold(request, timeout=self._timeout)
        except grpc.RpcError as e:
            if isinstance(e, grpc.Call) and e.code() == grpc.StatusCode.NOT_FOUND:
                raise RegistryNotFound("the ID number is not in the household register") from None
            refused = isinstance(e, grpc.Call) and e.code() == grpc.StatusCode.FAILED_PRECONDITION
            if refused and (request.monitoring_handle or request.monitor_until):
                assert isinstance(e, grpc.Call)
                raise MonitoringRefused(f"household registry: {e.details()}") from None
            raise SourceUnavailable(f"household registry: {_reason(e, self._timeout)}") from None
        household = _household(reply.household, self._clock.today())
        if isinstance(household, ConsentRefused):
            raise household
        return household, _grant(reply.grant, query_id, 1)

    def households(
        self,
        residents: Sequence[ResidentId],
        query_id: str,
        signatures: Sequence[connector_pb2.Signatures],
    ) -> tuple[list[GrantedHousehold | ServiceError], Grant | None]:
        """Many households in one call (the batch path), and the grant that covers those with
        tokens; raises SourceUnavailable when the call fails. A household the registry could
        not answer (RegistryNotFound, SourceUnavailable, ConsentRefused) is that household's
        error alone."""
        try:
            reply = self._stub.GetHouseholds(
                connector_pb2.HouseholdsRequest(
                    id_numbers=[r.value for r in residents],
                    query_id=query_id,
                    signatures=signatures,
                ),
                timeout=self._timeout * 4,
            )
        except grpc.RpcError as e:
            raise SourceUnavailable(
                f"household registry: {_reason(e, self._timeout * 4)}"
            ) from None
        if len(reply.households) != len(residents):
            raise SourceUnavailable(
                "household registry: the answer has the wrong number of households"
            )
        out: list[GrantedHousehold | ServiceError] = []
        today = self._clock.today()
        for h in reply.households:
            if h.problem:
                out.append(SourceUnavailable("household registry: a member record is malformed"))
            elif not h.members:
                out.append(RegistryNotFound("the ID number is not in the household register"))
            else:
                try:
                    out.append(_household(h, today))
                except SourceUnavailable as e:
                    out.append(e)
        with_tokens = sum(isinstance(h, GrantedHousehold) for h in out)
        grant = _grant(reply.grant, query_id, with_tokens) if with_tokens else None
        return out, grant

    def close(self) -> None:
        self.channel.close()


def _grant(pb: connector_pb2.TokenGrant, query_id: str, households: int) -> Grant:
    grant = Grant.from_pb(pb)
    if grant.query_id != query_id or grant.households != households:
        raise SourceUnavailable("household registry: the token grant is not for this query")
    return grant


def _masked(text: str) -> str:
    """The registry's masked ID as shown to the caller, only if it is one (no free text)."""
    return text if _MASKED.fullmatch(text) else "(ID not shown)"


def _household(reply: connector_pb2.Household, today: dt.date) -> GrantedHousehold | ConsentRefused:
    try:
        members = [
            Member(
                _RELATIONS.get(m.relation, "other"),
                dt.date.fromisoformat(m.birth_date),
                applicant=m.applicant,
            )
            for m in reply.members
        ]
    except ValueError:
        raise SourceUnavailable("household registry: the answer holds a malformed member") from None
    if sum(m.applicant for m in reply.members) != 1:
        raise SourceUnavailable("household registry: the answer holds a malformed member")
    if reply.consent_missing:
        if reply.tokens:
            raise SourceUnavailable("household registry: tokens for a household without consent")
        return unsigned_members(
            [
                (m.relation, m.birth_date, _masked(p.masked_id))
                for m, p in zip(members, reply.members, strict=True)
                if p.masked_id
            ]
        )
    if len(reply.pseudonym) != 32:
        raise SourceUnavailable("household registry: the answer has no household pseudonym")
    return GrantedHousehold(
        members,
        {t.connector_id: list(t.tokens) for t in reply.tokens},
        bytes(reply.pseudonym),
        reply.district,
        bytes(reply.monitoring_handle),
    )


class ConnectorPool:
    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        tls: TlsMaterial | None,
        verify_keys: Mapping[str, Ed25519PublicKey],
        public_key: PublicKey,
        timeout: float,
        layout: Layout,
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
        self._layouts: dict[str, Declared] = {}
        self.layout = layout
        # each connector answers in the slots of its kind only: the custodian sums and decrypts
        # kind by kind, so no connector can reach into another kind's slots
        self._kind_layouts = packing.kind_layouts(layout, self._endpoints)
        self._wire_layouts = {
            cid: packing.slots_pb(kl.slots) for cid, kl in self._kind_layouts.items()
        }

    def layout_digest(self, connector_id: str) -> bytes:
        """The digest of the layout ``connector_id`` answers in (its kind's slots)."""
        return self._kind_layouts[connector_id].digest()

    @property
    def connector_ids(self) -> tuple[str, ...]:
        return tuple(self._endpoints)

    def declared(self, connector_id: str) -> Declared | None:
        return self._layouts.get(connector_id)

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
            if cid not in self._layouts
        }
        for cid, fut in pending.items():
            try:
                self._layouts[cid] = self._check_describe(cid, fut.result())
            except grpc.RpcError as e:
                failures[cid] = _reason(e, self._timeout)
            except CryptoError as e:
                failures[cid] = f"invalid description: {e}"

    def _check_answer(
        self, cid: str, query_id: str, queried: bytes, r: connector_pb2.QueryResponse
    ) -> SignedAnswer:
        if r.connector_id != cid:
            raise CryptoError(f"it answers as {r.connector_id!r}")
        self._public.from_bytes(r.packed, r.key_fingerprint)
        answer = SignedAnswer(cid, r.packed, r.signature, r.key_fingerprint, queried)
        signing.verify(
            self._verify_keys[cid],
            answer.signed_bytes(query_id, self.layout_digest(cid)),
            answer.signature,
        )
        return answer

    def query(
        self, query_id: str, tokens: Mapping[str, Sequence[bytes]], grant: Grant
    ) -> FanOutResult:
        """Ask every connector about the tokens the token authority granted it, under the grant."""
        failures: dict[str, str] = {}
        self.describe_missing(failures)
        futures = {}
        queried = {}
        wire_grant = grant.to_pb()
        for cid in self._endpoints:
            if cid in failures:
                continue
            if cid not in tokens:
                failures[cid] = "the token authority granted no tokens for it"
                continue
            queried[cid] = signing.tokens_digest(tokens[cid])
            request = connector_pb2.QueryRequest(
                query_id=query_id,
                tokens=tokens[cid],
                key_fingerprint=self._public.fingerprint,
                layout=self._wire_layouts[cid],
                grant=wire_grant,
            )
            futures[cid] = self._stubs[cid].Query.future(request, timeout=self._timeout)
        answers = []
        for cid, fut in futures.items():
            try:
                answers.append(self._check_answer(cid, query_id, queried[cid], fut.result()))
            except grpc.RpcError as e:
                failures[cid] = _reason(e, self._timeout)
            except CryptoError as e:
                failures[cid] = f"invalid answer: {e}"
        for cid in futures:
            metrics.CONNECTOR_ANSWERS.labels(cid, "failed" if cid in failures else "answered").inc()
        return FanOutResult(tuple(answers), failures)

    def query_batch(
        self,
        query_id: str,
        households: Sequence[Mapping[str, Sequence[bytes]]],
        layouts: Mapping[str, BatchLayout],
        grant: Grant,
    ) -> BatchFanOut:
        """One QueryBatch per connector for all the households, under the grant."""
        failures: dict[str, str] = {}
        self.describe_missing(failures)
        futures, queried = {}, {}
        wire_grant = grant.to_pb()
        for cid in self._endpoints:
            if cid in failures:
                continue
            if any(cid not in h for h in households):
                failures[cid] = "the token authority granted no tokens for it"
                continue
            kind = kind_of(cid).kind
            layout = layouts[kind]
            tokens = [list(h[cid]) for h in households]
            queried[cid] = (tokens, layout)
            request = connector_pb2.QueryBatchRequest(
                query_id=query_id,
                households=[connector_pb2.TokenSet(tokens=t) for t in tokens],
                key_fingerprint=self._public.fingerprint,
                layout=packing.batch_layout_pb(layout),
                grant=wire_grant,
            )
            futures[cid] = self._stubs[cid].QueryBatch.future(request, timeout=self._timeout * 4)
        answers = []
        for cid, fut in futures.items():
            tokens, layout = queried[cid]
            try:
                r = fut.result()
                if r.connector_id != cid or len(r.packed) != layout.ciphertexts(len(households)):
                    raise CryptoError("its batch answer has the wrong shape")
                for c in r.packed:
                    self._public.from_bytes(c, r.key_fingerprint)
                q, cts = signing.batch_digests(tokens, list(r.packed))
                answer = BatchAnswer(
                    cid, kind_of(cid).kind, tuple(r.packed), r.signature, r.key_fingerprint, q, cts
                )
                signing.verify(
                    self._verify_keys[cid],
                    answer.signed_bytes(query_id, layout.digest()),
                    r.signature,
                )
                answers.append(answer)
            except grpc.RpcError as e:
                failures[cid] = _reason(e, self._timeout * 4)
            except CryptoError as e:
                failures[cid] = f"invalid answer: {e}"
        return BatchFanOut(tuple(answers), failures)

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()

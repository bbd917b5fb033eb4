"""The verification service's handle on the household registry (the token authority): one call
for the households of one applicant or of a thousand, their tokens per connector and the grant.

Nothing the registry sends is taken on trust beyond what only it can know: every member must be
well formed, exactly one must be the applicant, a household without consent has no tokens, and
the grant must be for this query and this many households.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc

from hedui.core import rpc
from hedui.core.grants import Grant
from hedui.core.judgement import members_of
from hedui.core.policy.engine import Member
from hedui.core.resident_id import ResidentId
from hedui.core.rpc import open_channel
from hedui.core.tls import TlsMaterial
from hedui.proto.v1 import connector_pb2, connector_pb2_grpc
from hedui.server.consent import CampaignRefused, ConsentRefused, unsigned_members
from hedui.server.errors import (
    MonitoringRefused,
    RegistryNotFound,
    ServiceError,
    SourceUnavailable,
)
from hedui.server.fanout import Endpoint, call_timeout, failure_reason

_MASKED = re.compile(r"[0-9]{3}\*{14}[0-9X]")


@dataclass(frozen=True)
class Asked:
    """One applicant as the registry is asked about it: by ID number or by the monitoring
    handle the registry issued, who signed its consent, and whether a handle is wanted."""

    resident: ResidentId | bytes
    signatures: connector_pb2.Signatures
    monitor_until: dt.date | None = None

    def to_pb(self) -> connector_pb2.Applicant:
        out = connector_pb2.Applicant(signatures=self.signatures)
        if isinstance(self.resident, ResidentId):
            out.id_number = self.resident.value
        else:
            out.monitoring_handle = self.resident
        if self.monitor_until is not None:
            out.monitor_until = self.monitor_until.isoformat()
        return out


@dataclass(frozen=True)
class GrantedHousehold:
    """A household as the registry answers it: members without ID numbers, and every
    connector's padded tokens under the token authority's grant."""

    members: list[Member]
    tokens: Mapping[str, list[bytes]]
    pseudonym: bytes = b""  # the registry's keyed name for the household (case numbers)
    district: str = ""  # its county-level district in the register (alerts go there)
    handle: bytes = b""  # a monitoring handle, when one was asked for
    # the members exactly as the registry answered them (their digest is in the grant): what
    # the key custodian applies the rules to
    composition: tuple[connector_pb2.Member, ...] = ()
    # with decoys (issue #26): per connector, each token's encrypted selector ({}: none)
    selected: Mapping[str, list[bytes]] = field(default_factory=dict)
    # asked for monitoring: the members' own tokens at each department, to watch for events
    watched: Mapping[str, list[bytes]] = field(default_factory=dict)


class RegistryClient:
    def __init__(
        self,
        endpoint: Endpoint,
        tls: TlsMaterial | None,
        timeout: float,
    ) -> None:
        self.channel = open_channel(endpoint.address, tls=tls, server_name=endpoint.connector_id)
        self._stub = connector_pb2_grpc.RegistryServiceStub(self.channel)
        self._campaigns = connector_pb2_grpc.CampaignServiceStub(self.channel)
        self._timeout = timeout

    def campaign(self, number: str) -> connector_pb2.Campaign | None:
        """The campaign registered under this document number, or None."""
        try:
            reply = self._campaigns.ListCampaigns(
                connector_pb2.ListCampaignsRequest(number=number), timeout=self._timeout
            )
        except grpc.RpcError as e:
            raise SourceUnavailable(f"household registry: {_failure(e, self._timeout)}") from None
        return next((c for c in reply.campaigns if c.number == number), None)

    def households(
        self, asked: Sequence[Asked], query_id: str
    ) -> tuple[list[GrantedHousehold | ServiceError], Grant | None]:
        """The household of every applicant, in order, and the grant that covers those with
        tokens (None when none has). A household the registry could not answer
        (RegistryNotFound, ConsentRefused, MonitoringRefused, SourceUnavailable) is that
        household's error alone; SourceUnavailable is raised when the whole call fails."""
        timeout = call_timeout(self._timeout, len(asked))
        try:
            reply = self._stub.GetHouseholds(
                connector_pb2.HouseholdsRequest(
                    query_id=query_id, applicants=[a.to_pb() for a in asked]
                ),
                timeout=timeout,
            )
        except grpc.RpcError as e:
            raise SourceUnavailable(f"household registry: {_failure(e, timeout)}") from None
        if len(reply.households) != len(asked):
            raise SourceUnavailable(
                "household registry: the answer has the wrong number of households"
            )
        out: list[GrantedHousehold | ServiceError] = []
        for a, h in zip(asked, reply.households, strict=True):
            if h.monitoring_refused:
                if a.monitor_until is None and isinstance(a.resident, ResidentId):
                    out.append(SourceUnavailable("household registry: an unasked refusal"))
                else:
                    out.append(MonitoringRefused(f"household registry: {h.monitoring_refused}"))
            elif h.authorisation_refused:
                out.append(
                    CampaignRefused(
                        [("consent.campaign", f"household registry: {h.authorisation_refused}")]
                    )
                )
            elif h.problem:
                out.append(SourceUnavailable("household registry: a member record is malformed"))
            elif not h.members:
                out.append(RegistryNotFound("the ID number is not in the household register"))
            else:
                try:
                    out.append(_household(h))
                except SourceUnavailable as e:
                    out.append(e)
        with_tokens = sum(isinstance(h, GrantedHousehold) for h in out)
        grant = _grant(reply.grant, query_id, with_tokens) if with_tokens else None
        return out, grant

    def close(self) -> None:
        self.channel.close()


def _failure(error: grpc.RpcError, timeout: float) -> str:
    """A failed call in fixed words (never the registry's own text): an UNAVAILABLE or
    DEADLINE_EXCEEDED the registry sent itself (a status in its trailers) is its refusal with
    that code, not "unreachable" (no connection) or "no answer within" (the deadline passed)."""
    code = error.code() if isinstance(error, grpc.Call) else None
    transport = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    if code in transport and rpc.sent_by_peer(error):
        assert code is not None
        return f"refused the call ({code.name})"
    return failure_reason(error, timeout)


def _grant(pb: connector_pb2.TokenGrant, query_id: str, households: int) -> Grant:
    grant = Grant.from_pb(pb)
    if grant.query_id != query_id or grant.households != households:
        raise SourceUnavailable("household registry: the token grant is not for this query")
    return grant


def _masked(text: str) -> str:
    """The registry's masked ID as shown to the caller, only if it is one (no free text)."""
    return text if _MASKED.fullmatch(text) else "(ID not shown)"


def _household(reply: connector_pb2.Household) -> GrantedHousehold | ConsentRefused:
    try:
        members = list(members_of(reply.members))
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
    selected: dict[str, list[bytes]] = {}
    if reply.selectors:
        try:
            for t in reply.tokens:
                if len(t.selector_index) != len(t.tokens):
                    raise IndexError
                selected[t.connector_id] = [reply.selectors[i] for i in t.selector_index]
        except IndexError:
            raise SourceUnavailable(
                "household registry: the answer's selectors do not match its tokens"
            ) from None
    return GrantedHousehold(
        members,
        {t.connector_id: list(t.tokens) for t in reply.tokens},
        bytes(reply.pseudonym),
        reply.district,
        bytes(reply.monitoring_handle),
        tuple(reply.members),
        selected,
        {t.connector_id: list(t.tokens) for t in reply.watched},
    )

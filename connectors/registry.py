"""The household registry connector (公安户籍): the population register itself.

It is also the token authority (:mod:`hedui.connectors.token_authority`): it answers the
verification service with each member's relation and birth date (never an ID number), every
connector's padded tokens and the signed grant for the query.

It also holds the consent to the register: unless the check is under a standing authorisation,
every member who is an adult on the registry's date must be among the consent's signers, or the
household gets no tokens and no grant, whatever the service asks (an insider of the service who
knows one ID number cannot have a household's sources asked without every adult's ID number).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

import grpc
from sqlalchemy.exc import SQLAlchemyError

from hedui.connectors.store import Person, RegisterStore
from hedui.connectors.token_authority import MONITOR_DAYS, HandleRefused, TokenAuthority
from hedui.core import rpc
from hedui.core.clock import DEPLOYMENT, Clock, is_adult
from hedui.core.errors import InvalidResidentId
from hedui.core.grants import MAX_BATCH
from hedui.core.resident_id import ResidentId
from hedui.core.resident_id import parse as parse_id
from hedui.proto.v1 import connector_pb2, connector_pb2_grpc

log = logging.getLogger("hedui.connectors.registry")

MAX_QUERY_ID = 128
MAX_SIGNERS = 32
_RELATIONS = {
    "head": connector_pb2.HEAD,
    "spouse": connector_pb2.SPOUSE,
    "child": connector_pb2.CHILD,
    "parent": connector_pb2.PARENT,
    "grandchild": connector_pb2.GRANDCHILD,
    "sibling": connector_pb2.SIBLING,
    "other": connector_pb2.OTHER,
}


class RegistryServicer(connector_pb2_grpc.RegistryServiceServicer):
    def __init__(
        self, store: RegisterStore, authority: TokenAuthority, clock: Clock = DEPLOYMENT
    ) -> None:
        self._store = store
        self._authority = authority
        self._clock = clock

    def _query_id(self, query_id: str, context: grpc.ServicerContext) -> None:
        """A query id is granted once, ever: an old (logged) query id cannot be reused to have
        another household's sources asked under it."""
        if not 0 < len(query_id) <= MAX_QUERY_ID:
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "query_id is required",
                rpc.bad_request("query_id", f"1 to {MAX_QUERY_ID} characters"),
            )
        now_ms = int(self._clock.now().timestamp() * 1000)
        if not self._store.first_use(query_id, now_ms):
            rpc.abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                "this query id was granted before",
                rpc.precondition_failure("REPLAY", "query_id", "a query id is granted once"),
            )

    def GetHousehold(
        self, request: connector_pb2.HouseholdRequest, context: grpc.ServicerContext
    ) -> connector_pb2.HouseholdGrant:
        self._query_id(request.query_id, context)
        today = self._clock.today()
        if (request.monitoring_handle or request.monitor_until) and not request.signatures.standing:
            rpc.abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                "monitoring needs a standing authorisation",
                rpc.precondition_failure(
                    "CONSENT", "signatures.standing", "monitoring is under a standing authorisation"
                ),
            )
        if request.monitoring_handle:
            try:
                id_number = self._authority.open_handle(bytes(request.monitoring_handle), today)
            except HandleRefused as e:
                rpc.abort(
                    context,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    str(e),
                    rpc.precondition_failure("MONITORING", "monitoring_handle", str(e)),
                )
        else:
            id_number = request.id_number
        try:
            resident = parse_id(id_number, today=today)
        except InvalidResidentId as e:
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                str(e),
                rpc.bad_request("id_number", str(e)),
            )
        until = self._monitor_until(request.monitor_until, today, context)
        try:
            members = self._store.household_of(resident.value)
        except SQLAlchemyError as e:
            log.error("registry database error: %s", type(e).__name__)
            rpc.abort(context, grpc.StatusCode.INTERNAL, "the household register is not available")
        if not members:
            rpc.abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                "the ID number is not in the household register",
            )
        household = self._household(resident.value, members, request.signatures)
        if household.problem:
            rpc.abort(context, grpc.StatusCode.INTERNAL, household.problem)
        if household.consent_missing:  # no tokens, no grant: its sources cannot be asked
            return connector_pb2.HouseholdGrant(household=household)
        household.district = self._store.district_of(members[0].household_id)
        if until is not None:
            household.monitoring_handle = self._authority.monitoring_handle(resident.value, until)
        grant = self._authority.grant(request.query_id, [_tokens_of(household)], batch=False)
        return connector_pb2.HouseholdGrant(household=household, grant=grant.to_pb())

    def _monitor_until(
        self, text: str, today: dt.date, context: grpc.ServicerContext
    ) -> dt.date | None:
        if not text:
            return None
        try:
            until = dt.date.fromisoformat(text)
            if len(text) != 10:
                raise ValueError
        except ValueError:
            until = None
        last = today + dt.timedelta(days=MONITOR_DAYS)
        if until is None or not today <= until <= last:
            reason = f"a date YYYY-MM-DD from {today.isoformat()} to {last.isoformat()}"
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"monitor_until must be {reason}",
                rpc.bad_request("monitor_until", reason),
            )
        return until

    def GetHouseholds(
        self, request: connector_pb2.HouseholdsRequest, context: grpc.ServicerContext
    ) -> connector_pb2.HouseholdsResponse:
        self._query_id(request.query_id, context)
        if not 1 <= len(request.id_numbers) <= MAX_BATCH:
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"1 to {MAX_BATCH} ID numbers per call",
                rpc.bad_request("id_numbers", f"1 to {MAX_BATCH} ID numbers"),
            )
        if len(request.signatures) != len(request.id_numbers):
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "one signatures entry per ID number",
                rpc.bad_request("signatures", "one entry per ID number, in the same order"),
            )
        # one number that does not parse is one household not found, never the whole call
        today = self._clock.today()
        ids: list[str | None] = []
        for raw in request.id_numbers:
            try:
                ids.append(parse_id(raw, today=today).value)
            except InvalidResidentId:
                ids.append(None)
        try:
            found = iter(self._store.households_of([i for i in ids if i is not None]))
        except SQLAlchemyError as e:
            log.error("registry database error: %s", type(e).__name__)
            rpc.abort(context, grpc.StatusCode.INTERNAL, "the household register is not available")
        households, answered_in = [], []
        for i, signed in zip(ids, request.signatures, strict=True):
            if i is None:
                households.append(connector_pb2.Household())
                continue
            members = next(found)
            household = self._household(i, members, signed)
            if household.tokens:
                answered_in.append((household, members[0].household_id))
            households.append(household)
        districts = self._store.districts_of([h for _, h in answered_in])
        for household, household_id in answered_in:
            household.district = districts.get(household_id, "")
        answered = [_tokens_of(h) for h in households if h.tokens]
        grant = self._authority.grant(request.query_id, answered, batch=True) if answered else None
        return connector_pb2.HouseholdsResponse(
            households=households, grant=grant.to_pb() if grant else None
        )

    def _household(
        self, applicant: str, members: Sequence[Person], signatures: connector_pb2.Signatures
    ) -> connector_pb2.Household:
        """The household as the service may see it, or its problem (a malformed record); without
        tokens when an adult member did not sign its consent."""
        if not members:
            return connector_pb2.Household()
        today = self._clock.today()
        signers = _signers(signatures, today)
        missing = False
        try:
            out = []
            for m in members:
                born = dt.date.fromisoformat(m.birth_date)
                signed = m.id_number in signers
                unsigned_adult = not signatures.standing and not signed and is_adult(born, today)
                missing = missing or unsigned_adult
                out.append(
                    connector_pb2.Member(
                        relation=_RELATIONS[m.relation],
                        birth_date=born.isoformat(),
                        applicant=m.id_number == applicant,
                        signed=signed,
                        masked_id=ResidentId(m.id_number).masked() if unsigned_adult else "",
                    )
                )
        except (KeyError, ValueError):
            log.error("registry: a household holds a malformed member record")
            return connector_pb2.Household(problem="the register holds a malformed member record")
        household_id = members[0].household_id
        pseudonym = self._authority.pseudonym(household_id)
        if missing:
            return connector_pb2.Household(members=out, consent_missing=True, pseudonym=pseudonym)
        tokens = self._authority.tokens([m.id_number for m in members], household_id)
        return connector_pb2.Household(
            members=out,
            tokens=[
                connector_pb2.ConnectorTokens(connector_id=c, tokens=t)
                for c, t in sorted(tokens.items())
            ],
            pseudonym=pseudonym,
        )


def _signers(signatures: connector_pb2.Signatures, today: dt.date) -> set[str]:
    """The signers' normalised ID numbers (the first MAX_SIGNERS; one that does not parse
    matches no member)."""
    out = set()
    for raw in signatures.id_numbers[:MAX_SIGNERS]:
        try:
            out.add(parse_id(raw, today=today).value)
        except InvalidResidentId:
            continue
    return out


def _tokens_of(household: connector_pb2.Household) -> dict[str, list[bytes]]:
    return {t.connector_id: list(t.tokens) for t in household.tokens}

"""The household registry connector (公安户籍): the population register itself.

It is also the token authority (:mod:`hedui.connectors.token_authority`): it answers the
verification service with each member's relation and birth date (never an ID number), every
connector's padded tokens and the signed grant for the query.

It also holds the consent to the register: unless the check is under a registered campaign
(:mod:`hedui.connectors.campaigns`) whose roster holds the household, every member who is an
adult on the registry's date must be among the consent's signers, or the household gets no
tokens and no grant, whatever the service asks (an insider of the service who knows one ID
number cannot have a household's sources asked without every adult's ID number).

Every household of a grant is bound (:class:`hedui.core.grants.Binding`) to the applicant the
registry looked up (its audit token, under the audit token key the service shares with the
registry) and to the consent or campaign it was asked under, so the key custodian can refuse a
decryption whose logged request names another applicant or authorisation.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

import grpc
from sqlalchemy.exc import SQLAlchemyError

from hedui.connectors.campaigns import Campaigns, Covered
from hedui.connectors.handles import MonitoringHandles
from hedui.connectors.store import CampaignRow, Person, RegisterStore
from hedui.connectors.token_authority import (
    MONITOR_DAYS,
    HandleRefused,
    HouseholdTokens,
    TokenAuthority,
)
from hedui.core import rpc
from hedui.core.clock import DEPLOYMENT, Clock, is_adult
from hedui.core.deployment import kind_of
from hedui.core.errors import InvalidResidentId
from hedui.core.grants import MAX_BATCH, Binding, authority_digest
from hedui.core.judgement import composition_digest
from hedui.core.resident_id import ResidentId
from hedui.core.resident_id import parse as parse_id
from hedui.core.tokens import TokenKey
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
        self,
        store: RegisterStore,
        authority: TokenAuthority,
        campaigns: Campaigns,
        audit_key: TokenKey,
        clock: Clock = DEPLOYMENT,
    ) -> None:
        self._store = store
        self._authority = authority
        self._campaigns = campaigns
        self._handles = MonitoringHandles(store, clock)
        self._audit_key = audit_key
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

    def _monitor_until(self, text: str, today: dt.date) -> dt.date | None:
        """The date a monitoring handle is asked for (None: none asked); HandleRefused when it
        is not a date from today to MONITOR_DAYS ahead."""
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
            raise HandleRefused(
                f"monitor_until must be a date YYYY-MM-DD from {today.isoformat()} "
                f"to {last.isoformat()}"
            )
        return until

    def _applicant(
        self, a: connector_pb2.Applicant, today: dt.date, query_id: str
    ) -> tuple[str | None, dt.date | None]:
        """(the applicant's normalised ID number or None when it does not parse, the date of
        the monitoring handle asked for); HandleRefused for a monitoring request it refuses."""
        if (a.monitoring_handle or a.monitor_until) and not a.signatures.campaign:
            raise HandleRefused("monitoring needs a registered monitoring campaign (主动发现)")
        id_number = a.id_number
        if a.monitoring_handle:
            id_number = self._handles.open(
                bytes(a.monitoring_handle), a.signatures, today, query_id
            )
        until = self._monitor_until(a.monitor_until, today)
        try:
            return parse_id(id_number, today=today).value, until
        except InvalidResidentId:
            return None, until

    def GetHouseholds(
        self, request: connector_pb2.HouseholdsRequest, context: grpc.ServicerContext
    ) -> connector_pb2.HouseholdsResponse:
        self._query_id(request.query_id, context)
        if not 1 <= len(request.applicants) <= MAX_BATCH:
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"1 to {MAX_BATCH} applicants per call",
                rpc.bad_request("applicants", f"1 to {MAX_BATCH} applicants"),
            )
        # one applicant that cannot be answered is that household's answer, never the whole call
        today = self._clock.today()
        asked: list[tuple[str | None, dt.date | None] | HandleRefused] = []
        for a in request.applicants:
            try:
                asked.append(self._applicant(a, today, request.query_id))
            except HandleRefused as e:
                asked.append(e)
        ids = [x[0] for x in asked if not isinstance(x, HandleRefused) and x[0] is not None]
        try:
            found = iter(self._store.households_of(ids))
        except SQLAlchemyError as e:
            log.error("registry database error: %s", type(e).__name__)
            rpc.abort(context, grpc.StatusCode.INTERNAL, "the household register is not available")
        members_of = [
            next(found) if not isinstance(x, HandleRefused) and x[0] is not None else []
            for x in asked
        ]
        try:
            covering = self._covering(request.applicants, members_of, today)
        except SQLAlchemyError as e:
            log.error("registry database error: %s", type(e).__name__)
            rpc.abort(context, grpc.StatusCode.INTERNAL, "the campaign register is not available")
        households: list[connector_pb2.Household] = []
        answered_in: list[tuple[connector_pb2.Household, str]] = []
        bindings: list[Binding] = []
        for a, x, members in zip(request.applicants, asked, members_of, strict=True):
            if isinstance(x, HandleRefused):
                households.append(connector_pb2.Household(monitoring_refused=str(x)))
                continue
            applicant, until = x
            if applicant is None or not members:
                households.append(connector_pb2.Household())
                continue
            campaign: CampaignRow | None = None
            if a.signatures.campaign:
                covered = covering[(a.signatures.campaign, a.signatures.program)]
                refused = _not_covered(
                    covered,
                    members[0],
                    until,
                    monitoring=bool(a.monitoring_handle) or until is not None,
                )
                if refused is not None or isinstance(covered, str):
                    households.append(refused or connector_pb2.Household())
                    continue
                campaign = covered.campaign
            monitoring = bool(a.monitoring_handle) or until is not None
            household = self._household(
                applicant, members, a.signatures, monitoring, position=len(answered_in)
            )
            if household.tokens:
                answered_in.append((household, members[0].household_id))
                bindings.append(self._binding(applicant, a.signatures, campaign, household.members))
                if until is not None and a.monitoring_handle:  # renewed, never past its campaign
                    self._handles.renew(bytes(a.monitoring_handle), until)
                    household.monitoring_handle = a.monitoring_handle
                elif until is not None:
                    household.monitoring_handle = self._handles.issue(
                        applicant, a.signatures, until
                    )
            households.append(household)
        districts = self._store.districts_of([h for _, h in answered_in])
        for household, household_id in answered_in:
            household.district = districts.get(household_id, "")
        answered = [HouseholdTokens.from_pb(h) for h in households if h.tokens]
        grant = self._authority.grant(request.query_id, answered, bindings) if answered else None
        return connector_pb2.HouseholdsResponse(
            households=households, grant=grant.to_pb() if grant else None
        )

    def _covering(
        self,
        applicants: Sequence[connector_pb2.Applicant],
        members_of: Sequence[Sequence[Person]],
        today: dt.date,
    ) -> dict[tuple[str, str], Covered | str]:
        """Per campaign named: the campaign with those of its applicants' households on its
        roster, or why it covers none (one roster query per campaign)."""
        asked: dict[tuple[str, str], list[str]] = {}
        for a, members in zip(applicants, members_of, strict=True):
            if a.signatures.campaign:
                key = (a.signatures.campaign, a.signatures.program)
                asked.setdefault(key, []).extend(m.household_id for m in members[:1])
        return {
            key: self._campaigns.covering(key[0], key[1], household_ids, today)
            for key, household_ids in asked.items()
        }

    def _binding(
        self,
        applicant: str,
        signatures: connector_pb2.Signatures,
        campaign: CampaignRow | None,
        members: Sequence[connector_pb2.Member],
    ) -> Binding:
        """What the grant binds this household to: the applicant the registry looked up, the
        consent or the registered campaign (its date and document) it was asked under, and the
        members it answered (the household the custodian applies the rules to)."""
        signers = _signers(signatures, self._clock.today())
        return Binding(
            self._audit_key.token(ResidentId(applicant)),
            authority_digest(
                program=signatures.program,
                campaign=signatures.campaign,
                case_number=signatures.case_number,
                signed_on=campaign.issued_on if campaign else signatures.signed_on,
                form_sha256=campaign.document_sha256 if campaign else bytes(signatures.form_sha256),
                signer_audit_tokens=[self._audit_key.token(ResidentId(s)) for s in signers],
            ),
            composition_digest(members),
        )

    def _household(
        self,
        applicant: str,
        members: Sequence[Person],
        signatures: connector_pb2.Signatures,
        monitoring: bool = False,
        position: int = 0,
    ) -> connector_pb2.Household:
        """The household as the service may see it, or its problem (a malformed record); without
        tokens when an adult member did not sign its consent. ``position``: its place in the
        grant's batch, if it is answered (its decoy selectors are made for it)."""
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
                unsigned_adult = not signatures.campaign and not signed and is_adult(born, today)
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
        k = self._authority.decoys_for(campaign=bool(signatures.campaign))
        tokens = self._authority.tokens([m.id_number for m in members], household_id, k, position)
        return connector_pb2.Household(
            members=out,
            tokens=[
                connector_pb2.ConnectorTokens(
                    connector_id=c, tokens=t, selector_index=tokens.index.get(c, [])
                )
                for c, t in sorted(tokens.tokens.items())
            ],
            pseudonym=pseudonym,
            selectors=tokens.selectors,
            watched=[
                connector_pb2.ConnectorTokens(connector_id=c, tokens=t)
                for c, t in sorted(tokens.own.items())
                if monitoring and not kind_of(c).is_bank
            ],
        )


def _not_covered(
    covering: Covered | str, head: Person, until: dt.date | None, *, monitoring: bool
) -> connector_pb2.Household | None:
    """The answer for a household its campaign does not cover (None: it covers it)."""
    if isinstance(covering, str):
        return connector_pb2.Household(authorisation_refused=covering)
    number = covering.campaign.number
    if head.household_id not in covering.households:
        return connector_pb2.Household(
            authorisation_refused=f"the household is not on the roster of campaign {number!r}"
        )
    if monitoring and covering.campaign.kind != connector_pb2.MONITORING:
        return connector_pb2.Household(
            monitoring_refused=f"campaign {number!r} is a re-verification (复核), not monitoring"
        )
    if until is not None and until.isoformat() > covering.campaign.valid_until:
        return connector_pb2.Household(
            monitoring_refused=f"monitor_until is after the end of campaign {number!r} "
            f"({covering.campaign.valid_until})"
        )
    return None


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

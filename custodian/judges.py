"""The custodian applies the programme's rules where the figures are (issue #24).

For each household of a query: the programme, region and date of its logged request entry (proven
in the log before anything is decrypted), the members the registry bound into the token grant
(their digest is the grant's, checked before anything is decrypted), and the totals the custodian
decrypted. The policy is the one built into this release (:class:`PolicyBook`, named by its
version: the SHA-256 of the rule code and the region's parameter file). What it returns is a
signed :class:`~hedui.proto.v1.verification_pb2.DecisionRecord` (the decision and the rules'
outcomes, no figure: what the audit log keeps) and beside it the
:class:`~hedui.proto.v1.verification_pb2.JudgementStatement` the record names by digest: the
decision, the benefit and the rules with only the figures the region's disclosure policy shows.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hedui.audit import merkle
from hedui.core import judgement
from hedui.core.clock import DEPLOYMENT
from hedui.core.custody import Totals
from hedui.core.errors import PolicyError
from hedui.core.grants import Grant
from hedui.core.judgement import DECISIONS, NONCE_BYTES, rule_pb
from hedui.core.policy.book import PolicyBook
from hedui.core.policy.engine import HouseholdFacts, Member
from hedui.custodian.errors import Refused
from hedui.proto.v1 import audit_pb2, connector_pb2, verification_pb2


@dataclass(frozen=True)
class Case:
    """One household as the custodian judges it."""

    program: str
    region: str
    as_of: dt.date
    request_leaf_hash: bytes
    members: tuple[Member, ...]
    request_id: str
    applicant_audit_token: bytes


class Judges:
    def __init__(
        self,
        policy: PolicyBook,
        key: Ed25519PrivateKey,
        new_nonce: Callable[[], bytes] = lambda: secrets.token_bytes(NONCE_BYTES),
        today: Callable[[], dt.date] = DEPLOYMENT.today,
    ) -> None:
        self.policy = policy
        self._key = key
        self._new_nonce = new_nonce
        self._today = today

    def cases(
        self,
        grant: Grant,
        entries: Sequence[bytes],
        compositions: Sequence[Sequence[connector_pb2.Member]],
    ) -> list[Case]:
        """Each household's case, or the refusal of the whole query (before anything is
        decrypted): a household whose members are not the ones the registry bound into the
        grant, or a request entry with no policy in force for its programme, region and date,
        or dated after today."""
        out = []
        today = self._today()
        for h, (entry, members) in enumerate(zip(entries, compositions, strict=True)):
            bound = grant.bindings[h].composition
            if not bound:
                raise Refused(
                    "the token grant binds no household composition: the registry is older "
                    "than the custodian's judgements (issue #24); upgrade it"
                )
            if judgement.composition_digest(members) != bound:
                raise Refused(
                    f"household {h}: its members are not the ones the registry bound into the "
                    "token grant"
                )
            request = audit_pb2.AuditEntry.FromString(entry).request
            try:
                as_of = dt.date.fromisoformat(request.as_of)
                self.policy.check(request.program, request.region, as_of)
                people = judgement.members_of(members)
            except PolicyError as e:
                raise Refused(f"household {h}: {e}") from None
            except ValueError:
                raise Refused(
                    f"household {h}: its request entry or members are malformed"
                ) from None
            if as_of > today + dt.timedelta(days=1):  # a day for time zones
                raise Refused(f"household {h}: its date {as_of} is after today ({today})")
            if sum(m.applicant for m in people) != 1:
                raise Refused(f"household {h}: its members do not name one applicant")
            out.append(
                Case(
                    request.program,
                    request.region,
                    as_of,
                    merkle.leaf_hash(entry),
                    people,
                    request.request_id,
                    bytes(request.applicant_audit_token),
                )
            )
        return out

    def judge(
        self,
        query_id: str,
        household: int,
        case: Case,
        totals: Totals,
        missing: Mapping[str, tuple[str, ...]],
    ) -> verification_pb2.Judgement:
        """The programme's rules applied to the household's totals, signed: its record (no
        figure) and its statement. A policy that cannot be applied to this household (a
        parameter not in force on its date) refuses this household alone, in the record."""
        facts = HouseholdFacts(members=case.members, totals=totals.values, missing=missing)
        record = verification_pb2.DecisionRecord(
            query_id=query_id,
            household=household,
            request_leaf_hash=case.request_leaf_hash,
            request_id=case.request_id,
            applicant_audit_token=case.applicant_audit_token,
            program=case.program,
            region=case.region,
            as_of=case.as_of.isoformat(),
            household_size=facts.size,
        )
        try:
            applied = self.policy.apply(case.program, case.region, facts, case.as_of)
        except PolicyError as e:
            record.refused = str(e)
            return judgement.judgement(self._key, record, None)
        ev = applied.evaluation
        record.decision = DECISIONS[ev.decision]
        record.rules.extend(judgement.audit_rules(ev.rules))
        record.policy_version = applied.policy_version
        statement = verification_pb2.JudgementStatement(
            query_id=query_id,
            household=household,
            request_leaf_hash=case.request_leaf_hash,
            program=case.program,
            region=case.region,
            as_of=case.as_of.isoformat(),
            decision=record.decision,
            benefit_fen=ev.benefit_fen,
            household_size=facts.size,
            policy_version=applied.policy_version,
            rules=[rule_pb(r) for r in ev.rules],
            household_thresholds=[r.id for r in ev.rules if r.threshold_fields],
            nonce=self._new_nonce(),
        )
        return judgement.judgement(self._key, record, statement)

"""The custodian applies the programme's rules where the figures are (issue #24).

For each household of a query: the programme, region and date of its logged request entry (proven
in the log before anything is decrypted), the members the registry bound into the token grant
(their digest is the grant's, checked before anything is decrypted), and the totals the custodian
decrypted. The policy is the one built into this release (:class:`PolicyBook`, named by its
version: the SHA-256 of the rule code and the region's parameter file). What it returns is a
signed :class:`~hedui.proto.v1.verification_pb2.JudgementStatement`: the decision, the benefit and
the rules' outcomes with only the figures the region's disclosure policy shows.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hedui.audit import merkle
from hedui.core import judgement
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


class Judges:
    def __init__(
        self,
        policy: PolicyBook,
        key: Ed25519PrivateKey,
        new_nonce: Callable[[], bytes] = lambda: secrets.token_bytes(NONCE_BYTES),
    ) -> None:
        self.policy = policy
        self._key = key
        self._new_nonce = new_nonce

    def cases(
        self,
        grant: Grant,
        entries: Sequence[bytes],
        compositions: Sequence[Sequence[connector_pb2.Member]],
    ) -> list[Case]:
        """Each household's case, or the refusal of the whole query: a household whose members
        are not the ones the registry bound into the grant, or a request entry with no policy
        in force for its programme, region and date."""
        out = []
        for h, (entry, members) in enumerate(zip(entries, compositions, strict=True)):
            if judgement.composition_digest(members) != grant.bindings[h].composition:
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
            if sum(m.applicant for m in people) != 1:
                raise Refused(f"household {h}: its members do not name one applicant")
            out.append(
                Case(request.program, request.region, as_of, merkle.leaf_hash(entry), people)
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
        """The programme's rules applied to the household's totals, signed."""
        facts = HouseholdFacts(members=case.members, totals=totals.values, missing=missing)
        try:
            applied = self.policy.apply(case.program, case.region, facts, case.as_of)
        except PolicyError as e:
            raise Refused(f"household {household}: {e}") from None
        ev = applied.evaluation
        statement = verification_pb2.JudgementStatement(
            query_id=query_id,
            household=household,
            request_leaf_hash=case.request_leaf_hash,
            program=case.program,
            region=case.region,
            as_of=case.as_of.isoformat(),
            decision=DECISIONS[ev.decision],
            benefit_fen=ev.benefit_fen,
            household_size=facts.size,
            policy_version=applied.policy_version,
            rules=[rule_pb(r) for r in ev.rules],
            household_thresholds=[r.id for r in ev.rules if r.threshold_fields],
            nonce=self._new_nonce(),
        )
        return judgement.judgement(self._key, statement)

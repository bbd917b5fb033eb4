"""The key custodian's judgement: the programme's rules applied where the figures are.

The custodian alone sees a household's decrypted totals, and 19 of the 21 fields are one
connector's own figure. So it applies the rules itself (issue #24): to the totals it decrypted,
the household the registry bound into the token grant (:func:`composition_digest`) and the
programme, region and date of the logged request entry. What leaves it is a
``JudgementStatement`` per household: the decision, the benefit and the rules' outcomes with only
the figures the region's disclosure policy shows, signed with the custodian's judgement key, so
that the verification service relays a decision it cannot change and never holds a total.

The statement carries a random nonce, so its digest (which the audit log keeps beside the
signature) gives no figure away; with the caller's verdict anyone holding the custodian's public
key checks that the decision is the custodian's (:func:`verify`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hedui.core import signing
from hedui.core.errors import CryptoError
from hedui.core.policy.engine import Decision, Member, Outcome, RuleResult
from hedui.proto.v1 import common_pb2, connector_pb2, verification_pb2

_LABEL = b"hedui/judgement/v1\0"
_COMPOSITION_LABEL = b"hedui/composition/v1"
NONCE_BYTES = 16

DECISIONS: Mapping[Decision, common_pb2.Decision.ValueType] = {
    Decision.ELIGIBLE: common_pb2.ELIGIBLE,
    Decision.INELIGIBLE: common_pb2.INELIGIBLE,
    Decision.NEEDS_REVIEW: common_pb2.NEEDS_REVIEW,
}
OUTCOMES: Mapping[Outcome, common_pb2.Outcome.ValueType] = {
    Outcome.PASSED: common_pb2.PASSED,
    Outcome.FAILED: common_pb2.FAILED,
    Outcome.UNDECIDED: common_pb2.UNDECIDED,
}
# a member's relation on the wire -> as the rules name it
RELATIONS: Mapping[int, str] = {v: k.lower() for k, v in connector_pb2.Relation.items() if v}


def rule_pb(r: RuleResult) -> verification_pb2.RuleOutcome:
    return verification_pb2.RuleOutcome(
        id=r.id,
        outcome=OUTCOMES[r.outcome],
        value=r.value,
        threshold=r.threshold,
        comparison=r.comparison,
        unit=r.unit,
        message_zh=r.message_zh,
        message_en=r.message_en,
        missing_sources=list(r.missing_sources),
        figures=[
            verification_pb2.Figure(
                name=f.name,
                value=f.value,
                comparison=f.comparison,
                threshold=f.threshold,
                unit=f.unit,
            )
            for f in r.figures
        ],
        references=list(r.references),
        title_zh=r.title_zh,
        title_en=r.title_en,
    )


def _framed(parts: Sequence[bytes]) -> bytes:
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def composition_digest(members: Sequence[connector_pb2.Member]) -> bytes:
    """The digest of a household's members as the registry answered them, in its order: what
    the registry binds into the grant and the custodian checks before applying the rules."""
    parts = [_COMPOSITION_LABEL]
    for m in members:
        parts += [
            connector_pb2.Relation.Name(m.relation).encode(),
            m.birth_date.encode(),
            b"1" if m.applicant else b"0",
            b"1" if m.signed else b"0",
        ]
    return hashlib.sha256(_framed(parts)).digest()


def members_of(members: Sequence[connector_pb2.Member]) -> tuple[Member, ...]:
    """The members as the rules take them; ValueError for a malformed birth date."""
    return tuple(
        Member(
            RELATIONS.get(m.relation, "other"),
            dt.date.fromisoformat(m.birth_date),
            applicant=m.applicant,
            signed=m.signed,
        )
        for m in members
    )


@dataclass(frozen=True)
class Judged:
    """A judgement whose signature was checked, and its statement."""

    judgement: verification_pb2.Judgement
    statement: verification_pb2.JudgementStatement


def digest(statement: bytes) -> bytes:
    return hashlib.sha256(statement).digest()


def judgement(
    key: Ed25519PrivateKey, statement: verification_pb2.JudgementStatement
) -> verification_pb2.Judgement:
    """The statement signed: Ed25519 over the label and the statement's digest."""
    data = statement.SerializeToString(deterministic=True)
    return verification_pb2.Judgement(
        statement=data, signature=signing.sign(key, _LABEL + digest(data))
    )


def verify_digest(key: Ed25519PublicKey, statement_digest: bytes, signature: bytes) -> None:
    """Raise :class:`CryptoError` unless the custodian signed a statement of this digest (what
    an auditor checks from the log alone)."""
    signing.verify(key, _LABEL + statement_digest, signature)


def verify(
    key: Ed25519PublicKey, j: verification_pb2.Judgement
) -> verification_pb2.JudgementStatement:
    """The statement, if the custodian signed it; :class:`CryptoError` otherwise."""
    data = bytes(j.statement)
    verify_digest(key, digest(data), bytes(j.signature))
    try:
        return verification_pb2.JudgementStatement.FromString(data)
    except Exception:
        raise CryptoError("the custodian's judgement is not a statement") from None

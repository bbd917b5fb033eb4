"""The key custodian's judgement: the programme's rules applied where the figures are.

The custodian alone sees a household's decrypted totals, and 19 of the 21 fields are one
connector's own figure. So it applies the rules itself (issue #24): to the totals it decrypted,
the household the registry bound into the token grant (:func:`composition_digest`) and the
programme, region and date of the logged request entry. What leaves it is, per household, a
``DecisionRecord`` (the decision, each rule's outcome and policy threshold, the policy version,
the household's size, the request it answers: no figure) signed with the custodian's judgement
key, and beside it the ``JudgementStatement`` the record names by digest: the benefit and the
rules with only the figures the region's disclosure policy shows (and a random nonce, so the
digest gives no figure away). The service relays a decision it cannot change: the audit log keeps
the record verbatim, and an auditor checks every verdict entry against it (:func:`verify_record`,
:func:`hedui.audit.auditor.check_judgements`); an intake checks its verdict (:func:`verify`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hedui.core import signing
from hedui.core.errors import CryptoError
from hedui.core.grants import framed
from hedui.core.policy.engine import Decision, Member, Outcome, RuleResult
from hedui.proto.v1 import audit_pb2, common_pb2, connector_pb2, verification_pb2

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


def composition_digest(members: Sequence[connector_pb2.Member]) -> bytes:
    """The digest of a household's members as the registry answered them, in its order: what
    the registry binds into the grant and the custodian checks before applying the rules."""
    parts = [_COMPOSITION_LABEL]
    for m in members:
        parts += [
            str(int(m.relation)).encode(),
            m.birth_date.encode(),
            b"1" if m.applicant else b"0",
            b"1" if m.signed else b"0",
        ]
    return hashlib.sha256(framed(parts)).digest()


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
    """A judgement whose signature was checked: its record, and its statement unless withheld
    (``decision_only``) or refused."""

    judgement: verification_pb2.Judgement
    record: verification_pb2.DecisionRecord
    statement: verification_pb2.JudgementStatement | None


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def judgement(
    key: Ed25519PrivateKey,
    record: verification_pb2.DecisionRecord,
    statement: verification_pb2.JudgementStatement | None,
) -> verification_pb2.Judgement:
    """The record (with the statement's digest) signed, and the statement beside it."""
    data = statement.SerializeToString(deterministic=True) if statement is not None else b""
    if statement is not None:
        record.statement_digest = digest(data)
    signed = record.SerializeToString(deterministic=True)
    return verification_pb2.Judgement(
        statement=data, record=signed, signature=signing.sign(key, _LABEL + signed)
    )


def verify_record(
    key: Ed25519PublicKey, record: bytes, signature: bytes
) -> verification_pb2.DecisionRecord:
    """The record, if the custodian signed it (what an auditor checks from the log alone);
    :class:`CryptoError` otherwise."""
    signing.verify(key, _LABEL + record, signature)
    try:
        return verification_pb2.DecisionRecord.FromString(record)
    except Exception:
        raise CryptoError("the custodian's decision record is malformed") from None


def verify(key: Ed25519PublicKey, j: verification_pb2.Judgement) -> Judged:
    """The judgement, if the custodian signed its record and the statement (when there is one)
    is the one the record names and agrees with it; :class:`CryptoError` otherwise."""
    record = verify_record(key, bytes(j.record), bytes(j.signature))
    if not j.statement:
        return Judged(j, record, None)
    if digest(bytes(j.statement)) != record.statement_digest:
        raise CryptoError("the custodian's statement is not the one its record names")
    try:
        st = verification_pb2.JudgementStatement.FromString(bytes(j.statement))
    except Exception:
        raise CryptoError("the custodian's judgement is not a statement") from None
    same = (
        (st.query_id, st.household, st.request_leaf_hash, st.program, st.region, st.as_of)
        == (
            record.query_id,
            record.household,
            record.request_leaf_hash,
            record.program,
            record.region,
            record.as_of,
        )
        and (st.decision, st.policy_version, st.household_size)
        == (record.decision, record.policy_version, record.household_size)
        and [(r.id, r.outcome) for r in st.rules] == [(r.id, r.outcome) for r in record.rules]
    )
    if not same:
        raise CryptoError("the custodian's statement disagrees with its record")
    return Judged(j, record, st)


def audit_rules(rules: Sequence[RuleResult]) -> list[audit_pb2.RuleRecord]:
    """The rules as the log keeps them: no figure, a threshold of the policy's own only."""
    return [
        audit_pb2.RuleRecord(
            id=r.id,
            outcome=OUTCOMES[r.outcome],
            threshold=None if r.threshold_fields else r.threshold,
        )
        for r in rules
    ]

"""What each intake system is shown of a verdict (issue #24 item 2).

By default a caller sees what the programme's policy discloses (the benefit, and the figures the
region lets the intake see). An intake system configured ``decision_only`` passes the benefit
straight to payment: it sees the decision and each rule's outcome, no figure and no benefit, and
the benefit sealed to its payment system's key (:mod:`hedui.core.payment`). The verdict the
service keeps (for retries and reports) is the whole one; the setting applies to every answer
that leaves for that caller: Verify, VerifyBatch, a retry, the report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from hedui.core.judgement import OUTCOMES
from hedui.core.payment import seal_benefit
from hedui.core.policy.engine import Outcome, outcome_words
from hedui.proto.v1 import verification_pb2

DECISION_ONLY = "decision_only"
_OUTCOME_OF = {wire: outcome for outcome, wire in OUTCOMES.items()}


@dataclass(frozen=True)
class Disclosure:
    """Callers (certificate names) whose answers are ``decision_only``, with their payment
    system's key."""

    decision_only: Mapping[str, X25519PublicKey]

    def of(self, caller: str) -> str:
        return DECISION_ONLY if caller in self.decision_only else ""

    def shown(self, caller: str, verdict: verification_pb2.Verdict) -> verification_pb2.Verdict:
        """``verdict`` as ``caller`` may see it."""
        key = self.decision_only.get(caller)
        return verdict if key is None else decision_only(verdict, key)


NONE = Disclosure({})


def _outcome_only(r: verification_pb2.RuleOutcome) -> verification_pb2.RuleOutcome:
    zh, en = outcome_words(
        _OUTCOME_OF.get(r.outcome, Outcome.UNDECIDED), r.title_zh or r.id, r.title_en or r.id
    )
    return verification_pb2.RuleOutcome(
        id=r.id,
        outcome=r.outcome,
        comparison=r.comparison,
        unit=r.unit,
        message_zh=zh,
        message_en=en,
        missing_sources=list(r.missing_sources),
        references=list(r.references),
        title_zh=r.title_zh,
        title_en=r.title_en,
    )


def decision_only(
    verdict: verification_pb2.Verdict, key: X25519PublicKey
) -> verification_pb2.Verdict:
    """The decision and each rule's outcome; the benefit only sealed to ``key``."""
    shown = verification_pb2.Verdict()
    shown.CopyFrom(verdict)
    del shown.rules[:]
    shown.rules.extend(_outcome_only(r) for r in verdict.rules)
    shown.benefit_fen = 0
    shown.figures_opening = b""
    shown.judgement.statement = b""  # it holds the benefit and the figures; the record stays
    shown.disclosure = DECISION_ONLY
    shown.sealed_benefit = seal_benefit(key, verdict)
    return shown

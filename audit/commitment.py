"""Commitments to a verdict's figures (issue #11 item 5): the audit log stores no figure.

The service draws a 32-byte salt per verdict, returns it to the caller as the verdict's
``figures_opening`` and logs ``SHA-256(label ‖ salt ‖ canonical figures)``. The canonical
figures (see :func:`canonical`) are the decision, the benefit and every number the caller was
shown. Without the salt the log reveals
nothing of the figures (the salt is 256 random bits); with the case file (verdict and salt) an
auditor checks that the figures are the ones decided, and nobody can find a second set of
figures for the same commitment.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from hedui.proto.v1 import verification_pb2

LABEL = b"hedui/figures-commitment/v2\n"
SALT_BYTES = 32


def canonical(verdict: verification_pb2.Verdict) -> bytes:
    """What is committed to, as canonical JSON (sorted keys, no spaces): the verdict's request
    id, programme, region, date, policy, household size, decision and benefit, and every rule's
    id, outcome, value, threshold and figures, in order. JSON quotes every string, so no
    choice of ids can make two different verdicts give the same bytes."""
    doc = {
        "request_id": verdict.request_id,
        "program": verdict.program,
        "region": verdict.region,
        "as_of": verdict.as_of,
        "policy_version": verdict.policy_version,
        "household_size": verdict.household_size,
        "decision": int(verdict.decision),
        "benefit_fen": verdict.benefit_fen,
        "rules": [
            {
                "id": r.id,
                "outcome": int(r.outcome),
                "value": r.value if r.HasField("value") else None,
                "threshold": r.threshold if r.HasField("threshold") else None,
                "figures": [[f.name, f.value, f.comparison, f.threshold] for f in r.figures],
            }
            for r in verdict.rules
        ],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def commit(salt: bytes, verdict: verification_pb2.Verdict) -> bytes:
    if len(salt) != SALT_BYTES:
        raise ValueError(f"a figures opening is {SALT_BYTES} bytes")
    return hashlib.sha256(LABEL + salt + canonical(verdict)).digest()


def opens(commitment: bytes, verdict: verification_pb2.Verdict) -> bool:
    """Whether ``verdict`` (with its ``figures_opening``) opens ``commitment``."""
    if len(verdict.figures_opening) != SALT_BYTES or len(commitment) != 32:
        return False
    return hmac.compare_digest(commit(verdict.figures_opening, verdict), commitment)

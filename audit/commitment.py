"""Commitments to a verdict's figures (issue #11 item 5): the audit log stores no figure.

The service draws a 32-byte salt per verdict, returns it to the caller as the verdict's
``figures_opening`` and logs ``SHA-256(label ‖ salt ‖ canonical figures)``. The canonical
figures are the benefit and every number the caller was shown (each rule's value, threshold and
figures), one ``name=value`` line each in a fixed order. Without the salt the log reveals
nothing of the figures (the salt is 256 random bits); with the case file (verdict and salt) an
auditor checks that the figures are the ones decided, and nobody can find a second set of
figures for the same commitment.
"""

from __future__ import annotations

import hashlib
import hmac

from hedui.proto.v1 import verification_pb2

LABEL = b"hedui/figures-commitment/v1\n"
SALT_BYTES = 32


def canonical(verdict: verification_pb2.Verdict) -> bytes:
    """The figures of ``verdict`` as the bytes committed to."""
    lines = [f"benefit_fen={verdict.benefit_fen}"]
    for r in verdict.rules:
        if r.HasField("value"):
            lines.append(f"rule:{r.id}:value={r.value}")
        if r.HasField("threshold"):
            lines.append(f"rule:{r.id}:threshold={r.threshold}")
        for f in r.figures:
            lines.append(f"rule:{r.id}:figure:{f.name}={f.value}:{f.comparison}:{f.threshold}")
    return "\n".join(lines).encode("utf-8")


def commit(salt: bytes, verdict: verification_pb2.Verdict) -> bytes:
    if len(salt) != SALT_BYTES:
        raise ValueError(f"a figures opening is {SALT_BYTES} bytes")
    return hashlib.sha256(LABEL + salt + canonical(verdict)).digest()


def opens(commitment: bytes, verdict: verification_pb2.Verdict) -> bool:
    """Whether ``verdict`` (with its ``figures_opening``) opens ``commitment``."""
    if len(verdict.figures_opening) != SALT_BYTES or len(commitment) != 32:
        return False
    return hmac.compare_digest(commit(verdict.figures_opening, verdict), commitment)

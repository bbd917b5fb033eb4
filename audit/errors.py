"""The one error base of ``hedui.audit``."""

from hedui.core.errors import HeduiError


class AuditError(HeduiError):
    """Base of every error of the audit log (Merkle tree, proofs, checkpoints)."""


class VerificationError(AuditError):
    """A proof or a signed checkpoint that does not verify; the message says which check failed."""

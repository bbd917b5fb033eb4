"""The one error base of ``hedui.audit``."""

from hedui.core.errors import HeduiError


class AuditError(HeduiError):
    """Base of every error of the audit log (Merkle tree, proofs, checkpoints)."""


class VerificationError(AuditError):
    """A proof or a signed checkpoint that does not verify; the message says which check failed."""


class Unwitnessed(VerificationError):
    """A checkpoint without the cosignatures of as many trusted witnesses as the policy needs."""


class WitnessRefused(AuditError):
    """A witness answered add-checkpoint with an error (c2sp.org/tlog-witness): ``status`` is
    its HTTP status (409: it has cosigned the log at ``size``, another size than the request's
    old size; 422: the consistency proof does not verify, or a fork; 403: the log's signature
    does not verify; 404: the witness does not know the log; 400: a malformed request)."""

    def __init__(self, message: str, status: int, size: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.size = size


class WitnessUnavailable(AuditError):
    """A witness that cannot be reached, or whose answer is not a tlog-witness answer."""

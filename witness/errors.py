"""The one error base of ``hedui.witness``."""

from hedui.core.errors import HeduiError


class WitnessError(HeduiError):
    """Base of every error of the witness."""


class ConfigError(WitnessError):
    """The witness's configuration, key or state cannot be used; the message names the file."""


class Rejected(WitnessError):
    """An add-checkpoint request the witness does not cosign; ``status`` is the HTTP status
    c2sp.org/tlog-witness gives the reason, and ``size`` (409 only) the size it last cosigned."""

    status = 400

    def __init__(self, message: str, size: int | None = None) -> None:
        super().__init__(message)
        self.size = size


class Malformed(Rejected):
    """400: a request that is not an add-checkpoint body, or an old size beyond the checkpoint."""

    status = 400


class NotSigned(Rejected):
    """403: no valid signature by the log's key on the checkpoint."""

    status = 403


class UnknownLog(Rejected):
    """404: a checkpoint of an origin the witness does not witness."""

    status = 404


class Conflict(Rejected):
    """409: the old size is not the size the witness last cosigned (``size``)."""

    status = 409


class Inconsistent(Rejected):
    """422: a consistency proof that does not verify, a fork at the witnessed size, a proof
    where none belongs, or a size-0 checkpoint whose root is not the empty tree's."""

    status = 422


class Unavailable(WitnessError):
    """The witness cannot write its state: nothing was cosigned (HTTP 503)."""

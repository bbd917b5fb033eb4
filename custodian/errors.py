"""The one error base of ``hedui.custodian``."""

from hedui.core.errors import HeduiError


class CustodianError(HeduiError):
    """Base of every error of the key custodian."""


class Refused(CustodianError):
    """The custodian refuses to decrypt (bad signature, mismatched aggregate, too few banks …);
    the message is its own words, without an ID number or a figure."""


class ConfigError(CustodianError):
    """The custodian's configuration file cannot be used; the message names the file."""


class Unavailable(CustodianError):
    """The custodian cannot write its own state (its journal, its witness of the log): it
    decrypts nothing, releases nothing and remembers nothing of the request, which may be sent
    again once the operator has fixed the cause. ``reason`` is a fixed identifier of what
    failed (for ``google.rpc.ErrorInfo``); the message names it and the system's reason, no
    path."""

    def __init__(self, what: str, reason: str, error: OSError) -> None:
        super().__init__(f"cannot write its {what}: {error.strerror or error}; nothing decrypted")
        self.reason = reason
        self.error = error  # for the custodian's own log (it names the file)

"""The one error base of ``hedui.clients``."""

from hedui.core.errors import HeduiError


class ClientError(HeduiError):
    """A client-side failure with a message that says what to do."""

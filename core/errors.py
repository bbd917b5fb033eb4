"""The one error base of ``hedui.core``; every failure in shared code derives from it."""


class HeduiError(Exception):
    """Base of every error hedui raises on purpose. ``str(err)`` is the message for a person."""


class InvalidResidentId(HeduiError):
    """A resident ID number that GB 11643-1999 does not accept.

    ``reason`` is a short machine-readable code (``length``, ``characters``, ``region``,
    ``birth_date``, ``check_character``, ``empty``, ``too_long``); the message says what to fix.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class CryptoError(HeduiError):
    """A key, ciphertext or signature that cannot be used (wrong key, malformed bytes, bad signature)."""


class KeyFileError(HeduiError):
    """A key or certificate file that is missing, unreadable or too widely readable."""


class WorkdirError(HeduiError):
    """A working directory that cannot be created or written, or is in use by another process."""


class ConfigFileError(HeduiError):
    """A party's configuration file or ``HEDUI_*`` override that cannot be used; the message
    names the file or variable and the setting."""


class ListenError(HeduiError):
    """A server that cannot listen on its configured address (in use, or not this host's)."""


class PolicyError(HeduiError):
    """A programme, region or date for which no policy is in force, or a parameter file that
    cannot be used."""

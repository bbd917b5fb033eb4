"""The one error base of ``hedui.custodian``."""

from hedui.core.errors import HeduiError


class CustodianError(HeduiError):
    """Base of every error of the key custodian."""


class Refused(CustodianError):
    """The custodian refuses to decrypt (bad signature, mismatched aggregate, too few banks …);
    the message is its own words, without an ID number or a figure."""


class ConfigError(CustodianError):
    """The custodian's configuration file cannot be used; the message names the file."""

"""The one error base of ``hedui.server``."""

from hedui.core.errors import HeduiError
from hedui.core.errors import PolicyError as PolicyError  # hedui.core.policy's, answered here


class ServiceError(HeduiError):
    """Base of every error of the verification service."""


class ConfigError(ServiceError):
    """A configuration file or override that cannot be used; the message names the setting."""


class CustodianRefused(ServiceError):
    """The key custodian refused to decrypt (bad signature, mismatched aggregate, too few banks)."""


class RegistryNotFound(ServiceError):
    """The applicant is not in the household register."""


class SourceUnavailable(ServiceError):
    """The registry (or a source the verification cannot go on without) did not answer."""


class MonitoringRefused(ServiceError):
    """The registry refused a monitoring handle (past its date, not its own) or its issue."""

"""The one table from a verification's refusal to its gRPC status: ``Verify`` ends the call
with it, ``VerifyBatch`` puts it in that application's result (``BatchResult.status``, and the
code's name and message in ``BatchResult.error`` for clients of the earlier contract).

RESOURCE_EXHAUSTED, UNAVAILABLE and ABORTED mean "nothing was decided, ask again later"; they
carry a ``RetryInfo`` with the delay to wait.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from hedui.audit.errors import AuditError
from hedui.core import rpc
from hedui.server.consent import ConsentRefused
from hedui.server.errors import (
    CustodianRefused,
    MonitoringRefused,
    PolicyError,
    RegistryNotFound,
    ServiceError,
    SourceUnavailable,
)
from hedui.server.quotas import QuotaExceeded
from hedui.server.requests import StateDamaged, StateUnavailable

log = logging.getLogger("hedui.server")


class RequestConflict(ServiceError):
    """A request id already used by this caller for a different application."""


class RequestInProgress(ServiceError):
    """A request id whose first call is still being verified."""


class RequestExpired(ServiceError):
    """A request id whose verdict's figures were purged after the retention period."""


class Unfinished(ServiceError):
    """A verification that failed in a way no other refusal names (logged with its trace)."""


def retry_after(seconds: int) -> error_details_pb2.RetryInfo:
    return error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds))


def invalid(violations: list[tuple[str, str]]) -> status_pb2.Status:
    """INVALID_ARGUMENT with one field violation per bad field of a request."""
    detail = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
            for f, d in violations
        ]
    )
    return rpc.status_pb(
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid request: " + "; ".join(f"{f}: {d}" for f, d in violations),
        detail,
    )


def status_of(error: Exception, request_id: str, policy_subject: str = "") -> status_pb2.Status:
    """The status of one application's refusal. ``policy_subject`` names the programme, region
    and date a PolicyError is about."""
    code = grpc.StatusCode
    if isinstance(error, QuotaExceeded):
        return rpc.status_pb(
            code.RESOURCE_EXHAUSTED,
            str(error),
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=error.subject, description=str(error)
                    )
                ]
            ),
            retry_after(error.retry_seconds),
        )
    if isinstance(error, MonitoringRefused):
        return rpc.status_pb(
            code.FAILED_PRECONDITION,
            str(error),
            rpc.precondition_failure("MONITORING", "monitoring_handle", str(error)),
        )
    if isinstance(error, PolicyError):
        return rpc.status_pb(
            code.FAILED_PRECONDITION,
            str(error),
            rpc.precondition_failure("POLICY", policy_subject, str(error)),
        )
    if isinstance(error, ConsentRefused):
        return rpc.status_pb(
            code.FAILED_PRECONDITION,
            error.detail,
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type="CONSENT", subject=subject, description=description
                    )
                    for subject, description in error.violations
                ]
            ),
        )
    if isinstance(error, RequestConflict):
        return rpc.status_pb(code.ALREADY_EXISTS, str(error))
    if isinstance(error, RequestInProgress):
        return rpc.status_pb(code.ABORTED, str(error), retry_after(1))
    if isinstance(error, RequestExpired):
        return rpc.status_pb(
            code.FAILED_PRECONDITION,
            str(error),
            rpc.precondition_failure("RETENTION", request_id, str(error)),
        )
    if isinstance(error, RegistryNotFound):
        return rpc.status_pb(code.NOT_FOUND, str(error))
    if isinstance(error, SourceUnavailable):
        return rpc.status_pb(code.UNAVAILABLE, str(error), retry_after(5))
    if isinstance(error, StateDamaged):  # retrying does not help: the operator must restore it
        log.error("request=%s: %s", request_id, error)
        return rpc.status_pb(code.DATA_LOSS, str(error))
    if isinstance(error, AuditError | CustodianRefused | StateUnavailable | Unfinished):
        log.error("request=%s failed: %s: %s", request_id, type(error).__name__, error)
        # the custodian's reasons are its own words (no ID, no figure); storage errors are not
        what = (
            (
                str(error)
                if str(error).startswith("the key custodian")
                else f"the key custodian refused: {error}"
            )
            if isinstance(error, CustodianRefused)
            else "the service's state database is not available"
            if isinstance(error, StateUnavailable)
            else "the audit log is not available"
            if isinstance(error, AuditError)
            else "an unexpected error (the operator must look at the service's log)"
        )
        return rpc.status_pb(
            code.UNAVAILABLE,
            f"the verification could not be completed: {what}; nothing was decided, retry later",
            retry_after(5),
        )
    log.error("request=%s: unexpected %s", request_id, type(error).__name__)
    return rpc.status_pb(
        code.INTERNAL, "internal error; the operator must look at the service's log"
    )

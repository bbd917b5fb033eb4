"""gRPC plumbing shared by every hedui server and client.

- errors as status codes with ``google.rpc`` details (``BadRequest``, ``PreconditionFailure``);
- ``create_server``: health and reflection registered in one place, mutual TLS unless insecure,
  an interceptor that checks roles, admits calls (``Admission``) and turns an unexpected
  exception into INTERNAL without its text, bound to the address given (port 0: a free port);
- channels with the same TLS material.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from hedui.core import metrics
from hedui.core.errors import CryptoError, ListenError
from hedui.core.tls import (
    PeerIdentity,
    Revocations,
    TlsMaterial,
    channel_options,
    peer_identity,
    peer_serial,
)

HEALTH_SERVICE_NAME = health.SERVICE_NAME
log = logging.getLogger("hedui.rpc")


def status_pb(code: grpc.StatusCode, message: str, *details: Any) -> status_pb2.Status:
    """A ``google.rpc.Status`` with its details packed (as a call's trailers or a stream's
    per-item result carry it)."""
    packed = []
    for d in details:
        a = any_pb2.Any()
        a.Pack(d)
        packed.append(a)
    code_value = getattr(code_pb2, code.name)
    return status_pb2.Status(code=code_value, message=message, details=packed)


def _status(code: grpc.StatusCode, message: str, *details: Any) -> grpc.Status:
    return rpc_status.to_status(status_pb(code, message, *details))


def abort_with(context: grpc.ServicerContext, status: status_pb2.Status) -> NoReturn:
    """End the call with ``status`` (see :func:`status_pb`)."""
    context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("abort_with_status returned")  # pragma: no cover


def abort(
    context: grpc.ServicerContext, code: grpc.StatusCode, message: str, *details: Any
) -> NoReturn:
    context.abort_with_status(_status(code, message, *details))
    raise AssertionError("abort_with_status returned")  # pragma: no cover


def bad_request(field: str, description: str) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
        ]
    )


def precondition_failure(
    kind: str, subject: str, description: str
) -> error_details_pb2.PreconditionFailure:
    return error_details_pb2.PreconditionFailure(
        violations=[
            error_details_pb2.PreconditionFailure.Violation(
                type=kind, subject=subject, description=description
            )
        ]
    )


def error_info(reason: str, domain: str, **metadata: str) -> error_details_pb2.ErrorInfo:
    """Why a call failed, as a fixed identifier (``reason``) of the party (``domain``)."""
    return error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=metadata)


def sent_by_peer(error: grpc.RpcError) -> bool:
    """Whether the server itself ended the call with this status (every hedui server ends a
    call with a ``google.rpc.Status`` in its trailers), not the client's gRPC library (no
    connection, the deadline passed on the way, a reset): an UNAVAILABLE the custodian sent is
    its refusal, an UNAVAILABLE without it is a transport failure."""
    if not isinstance(error, grpc.Call):
        return False
    try:
        return rpc_status.from_call(error) is not None
    except ValueError:  # a status in the trailers that disagrees with the call's
        return True


def error_details(error: grpc.RpcError) -> list[Any]:
    """The ``google.rpc`` detail messages of a failed call (client side)."""
    if not isinstance(error, grpc.Call):
        return []
    status = rpc_status.from_call(error)
    if status is None:
        return []
    out: list[Any] = []
    for d in status.details:
        for cls in (
            error_details_pb2.BadRequest,
            error_details_pb2.PreconditionFailure,
            error_details_pb2.QuotaFailure,
            error_details_pb2.RetryInfo,
            error_details_pb2.ErrorInfo,
        ):
            if d.Is(cls.DESCRIPTOR):
                msg = cls()
                d.Unpack(msg)
                out.append(msg)
    return out


def _internal(context: grpc.ServicerContext, method: str) -> NoReturn:
    """The last resort for an exception no handler expected: the traceback goes to the
    operator's log, the caller gets INTERNAL without it (never UNKNOWN with raw text)."""
    code = context.code()  # type: ignore[attr-defined]  # grpcio has it; the stubs do not
    if code not in (None, grpc.StatusCode.OK):  # an abort on its way out
        raise
    if isinstance(sys.exc_info()[1], grpc.RpcError) and not context.is_active():
        # the caller cancelled or went away (a reflection client closing its stream early):
        # gRPC's own error for the request stream it can no longer read; nothing broke
        log.debug("%s: the caller went away before the call ended", method)
        raise
    log.exception("unexpected failure in %s", method)
    abort(
        context,
        grpc.StatusCode.INTERNAL,
        f"internal error in {method}; the operator's log has the details",
    )


def _guarded_stream(
    responses: Iterator[Any],
    context: grpc.ServicerContext,
    method: str,
    slot: Slot,
    done: Callable[[bool], None],
) -> Iterator[Any]:
    raised = True
    try:
        while True:
            with slot.working():  # the slot is held while the handler runs, cancelled or not
                try:
                    response = next(responses)
                except StopIteration:
                    return
                except Exception:
                    _internal(context, method)
            yield response
        raised = False
    finally:
        slot.end()
        done(raised)


class Slot:
    """One admitted call's place. It is given back once the call has ended (its handler
    returned, or its caller went away) and no handler code of it is running: a caller that
    cancels does not free the place while the work it started goes on."""

    def __init__(self, release: Callable[[], None]) -> None:
        self._release = release
        self._lock = threading.Lock()
        self._busy = 0
        self._ended = False
        self._released = False

    def _maybe_release(self) -> None:
        if self._ended and not self._busy and not self._released:
            self._released = True
            self._release()

    @contextlib.contextmanager
    def working(self) -> Iterator[None]:
        with self._lock:
            self._busy += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1
                self._maybe_release()

    def end(self) -> None:
        with self._lock:
            self._ended = True
            self._maybe_release()


class Admission:
    """Admission control: at most ``limits[method]`` calls of a method at once, and of those at
    most ``per_caller[method]`` from one caller (the name in its certificate), so that one
    intake system cannot take every place from another; one more is answered
    RESOURCE_EXHAUSTED at once instead of waiting behind the others."""

    def __init__(
        self, limits: Mapping[str, int], per_caller: Mapping[str, int] | None = None
    ) -> None:
        self._slots = {m: threading.BoundedSemaphore(n) for m, n in limits.items()}
        self._per_caller = dict(per_caller or {})
        self._held: dict[tuple[str, str], int] = {}  # (method, caller) -> places held
        self._lock = threading.Lock()
        self.refused = 0

    def _refuse(self, context: grpc.ServicerContext, message: str) -> NoReturn:
        self.refused += 1
        metrics.QUOTA_REFUSALS.labels("admission").inc()
        abort(
            context,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            message,
            error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2)),
        )

    def _take_share(self, method: str, context: grpc.ServicerContext) -> Callable[[], None]:
        """Count the caller's place (or refuse it); what gives it back."""
        share = self._per_caller.get(method)
        peer = peer_identity(context) if share is not None else None
        if share is None or peer is None:
            return lambda: None
        key = (method, peer.name)
        with self._lock:
            if self._held.get(key, 0) >= share:
                held = True
            else:
                held = False
                self._held[key] = self._held.get(key, 0) + 1
        if held:
            self._refuse(
                context,
                f"{peer.name} has {share} calls in progress, its share of the service; "
                "try again in a few seconds",
            )

        def give_back() -> None:
            with self._lock:
                self._held[key] -= 1
                if not self._held[key]:
                    del self._held[key]

        return give_back

    def admit(self, method: str, context: grpc.ServicerContext) -> Slot:
        """Take a place for ``method`` (or abort); it is given back when the call has ended and
        none of its handler code runs (see :class:`Slot`)."""
        semaphore = self._slots.get(method)
        if semaphore is None:
            return Slot(lambda: None)
        give_back = self._take_share(method, context)
        if not semaphore.acquire(blocking=False):
            give_back()
            self._refuse(context, "the service is saturated; try again in a few seconds")

        def release() -> None:
            semaphore.release()
            give_back()

        slot = Slot(release)
        context.add_callback(slot.end)  # the caller went away: given back once idle
        return slot


def _subject(peer: PeerIdentity | None) -> str:
    """A certificate's subject as a log line names it: CN (its party's name) and OU (its role)."""
    return "?" if peer is None else f"CN={peer.name},OU={peer.role}"


class RoleInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Admit a call only when the peer's certificate has a role allowed for the service.

    ``roles`` maps a full service name (``hedui.v1.AuditService``) to the roles that may call
    it; health and reflection are open to every authenticated peer. On a plaintext channel
    (``--insecure``) there is no certificate and every call is admitted. A peer whose
    certificate the CA revoked gets UNAUTHENTICATED on every call, health included.
    """

    def __init__(
        self,
        roles: Mapping[str, Collection[str]],
        admission: Admission | None = None,
        revocations: Revocations | None = None,
        party: str = "",
    ) -> None:
        self._roles = {service: frozenset(r) for service, r in roles.items()}
        self._admission = admission or Admission({})
        self._revocations = revocations
        self._party = party

    def _record(
        self, method: str, context: grpc.ServicerContext, start: float, raised: bool
    ) -> None:
        code = context.code()  # type: ignore[attr-defined]  # grpcio has it; the stubs do not
        if code is None:
            code = grpc.StatusCode.UNKNOWN if raised else grpc.StatusCode.OK
        name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        metrics.RPC_REQUESTS.labels(self._party, method, name).inc()
        metrics.RPC_LATENCY.labels(self._party, method).observe(time.monotonic() - start)

    def _revoked(self, context: grpc.ServicerContext, method: str) -> None:
        if self._revocations is None:
            return
        serial = peer_serial(context)
        if serial is None:
            return
        try:
            revoked = self._revocations.revoked(serial)
        except CryptoError as e:  # fail closed: without a list in force nobody is admitted
            log.error("%s; refusing every call until it is replaced", e)
            abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "the server cannot check revocations (its revocation list is missing, damaged "
                "or expired); its operator's log says which",
            )
        if revoked:
            peer = peer_identity(context)
            log.warning(
                "refused a call to %s: the caller's certificate (subject %s, serial %x) was "
                "revoked by the deployment's CA",
                method,
                _subject(peer),
                serial,
            )
            abort(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                f"certificate serial {serial:x} was revoked by the deployment's CA",
            )

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None:
            return None
        open_to_all = method.startswith(("/grpc.health.", "/grpc.reflection."))
        roles = self._roles.get(method.split("/")[1], frozenset())

        def check(context: grpc.ServicerContext) -> None:
            self._revoked(context, method)
            if open_to_all:
                return
            peer = peer_identity(context)
            if peer is not None and peer.role not in roles:
                abort(
                    context,
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"certificate role {peer.role!r} of {peer.name!r} may not call {method}",
                )

        def guard(
            behavior: Callable[[Any, grpc.ServicerContext], Any], streaming: bool
        ) -> Callable[[Any, grpc.ServicerContext], Any]:
            def guarded(request: Any, context: grpc.ServicerContext) -> Any:
                start, raised, handed_over = time.monotonic(), True, False
                try:
                    check(context)
                    slot = self._admission.admit(method, context)
                    try:
                        with slot.working():
                            result = behavior(request, context)
                    except Exception:
                        slot.end()
                        _internal(context, method)
                    raised = False
                    if not streaming:
                        slot.end()
                        return result
                    handed_over = True
                    return _guarded_stream(
                        result,
                        context,
                        method,
                        slot,
                        lambda failed: self._record(method, context, start, failed),
                    )
                finally:
                    if not handed_over:
                        self._record(method, context, start, raised)

            return guarded

        ser = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(guard(handler.unary_unary, False), **ser)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(guard(handler.unary_stream, True), **ser)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(guard(handler.stream_unary, False), **ser)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(guard(handler.stream_stream, True), **ser)
        return None  # a handler of no known kind is refused


def caller(context: grpc.ServicerContext) -> PeerIdentity:
    from hedui.core.tls import INSECURE_PEER

    return peer_identity(context) or INSECURE_PEER


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer

    def stop(self, grace: float | None = 1.0) -> None:
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


def create_server(
    address: str,
    *,
    tls: TlsMaterial | None,
    roles: Mapping[str, Collection[str]],
    register: Sequence[Callable[[grpc.Server], None]],
    max_workers: int = 8,
    admission: Admission | None = None,
    party: str = "",
) -> RunningServer:
    """Start a server with health and reflection; ``tls=None`` is plaintext (``--insecure``).

    ``roles`` names every service the server offers and the certificate roles that may call it.
    """
    service_names = list(roles)
    revocations = (
        Revocations(tls.ca_pem, tls.crl_path) if tls is not None and tls.crl_path else None
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        interceptors=[RoleInterceptor(roles, admission, revocations, party)],
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 4 * 1024 * 1024)],
    )
    for reg in register:
        reg(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in (*service_names, ""):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (*service_names, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, tls.server_credentials())
    except RuntimeError:  # grpc: "Failed to bind to address"
        server.stop(0)
        raise ListenError(
            f"cannot listen on {address}: the port is in use or the address is not this "
            "host's; free it or give another address (its config's address, or HEDUI_ADDRESS)"
        ) from None
    server.start()
    return RunningServer(server, port, health_servicer)


def open_channel(
    target: str, *, tls: TlsMaterial | None, server_name: str | None = None
) -> grpc.Channel:
    """A channel to ``target``; a comma-separated list of ``IP:PORT`` (the service's replicas)
    is one channel that spreads calls round-robin over those that answer."""
    options = channel_options(None if tls is None else server_name)
    if "," in target:
        target = "ipv4:" + ",".join(t.strip() for t in target.split(","))
        options.append(("grpc.lb_policy_name", "round_robin"))
    if tls is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, tls.channel_credentials(), options=options)


def wait_healthy(channel: grpc.Channel, timeout: float) -> None:
    """Block until the server behind ``channel`` reports SERVING (raises grpc.RpcError)."""
    stub = health_pb2_grpc.HealthStub(channel)
    grpc.channel_ready_future(channel).result(timeout=timeout)
    resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    if resp.status != health_pb2.HealthCheckResponse.SERVING:
        raise RuntimeError("server is not serving")


@dataclass(frozen=True)
class HandshakeFailure:
    """Why a client's TLS handshake failed, read from a failed call's status details (gRPC
    gives no code of its own: every one is UNAVAILABLE, "failed to connect to all addresses").

    ``fault``: whose certificate (or setup) is likely at fault —
    ``"server"``: this side could not verify the server's certificate (``reason`` is OpenSSL's
    words: "certificate has expired", "certificate is not yet valid", "unable to get local
    issuer certificate", …); ``"server-name"``: the server's certificate is not for the name
    expected; ``"plaintext"``: the server does not speak TLS; ``"own"``: this side's own
    certificate and key cannot be used; ``"rejected"``: the server closed the connection while
    it was set up, most often because it did not accept this side's certificate (not certain:
    ``definite`` is False).
    """

    fault: str
    reason: str
    definite: bool = True


_VERIFY_FAILED = "CERTIFICATE_VERIFY_FAILED: "


def handshake_failure(details: str) -> HandshakeFailure | None:
    """The TLS handshake failure a client's UNAVAILABLE ``details`` report, or None (for
    example a refused connection: nothing listening)."""
    if _VERIFY_FAILED in details:
        reason = details.split(_VERIFY_FAILED, 1)[1]
        reason = reason.removesuffix(": OK").split(":", 1)[0].strip()
        return HandshakeFailure("server", reason or "certificate verify failed")
    lowered = details.lower()
    if "hostname verification" in lowered:
        return HandshakeFailure("server-name", "the certificate is for another name")
    if "wrong_version_number" in lowered:
        return HandshakeFailure("plaintext", "the server does not answer in TLS")
    if "failed to create security handshaker" in lowered:
        return HandshakeFailure("own", "the certificate and key cannot be used together")
    if "_alert_" in lowered:  # the server's TLS alert: it refused this side's certificate
        alert = details.split("_ALERT_", 1)[-1].split(":", 1)[0].strip()
        return HandshakeFailure("rejected", alert.lower().replace("_", " "))
    if "tls handshake failed" in lowered or "ssl_error_ssl" in lowered:
        reason = details.rsplit("SSL routines:OPENSSL_internal:", 1)[-1].removesuffix(": OK")
        return HandshakeFailure("server", reason.strip())
    if "socket closed" in lowered and "failed to connect" in lowered:
        return HandshakeFailure("rejected", "socket closed", definite=False)
    return None

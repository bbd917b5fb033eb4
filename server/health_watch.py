"""The service's health reflects its dependencies (issue #11 item 8).

A verification needs the registry (the household and the tokens) and the key custodian (the
totals), and it writes to the state database and the audit log: while either party does not
answer its own health check, or either database refuses a write, the service reports
NOT_SERVING for itself and its verification service, so a load balancer or an operator's probe
sees the truth instead of SERVING over calls that would all fail. It turns back to SERVING when
all answer again. A database is probed with a real write every few seconds, and at once after
any of the service's own writes to it failed (issue #27).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

log = logging.getLogger("hedui.server")


def _serving(channel: grpc.Channel, timeout: float) -> bool:
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=timeout
        )
    except grpc.RpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@dataclass(frozen=True)
class Storage:
    """A database the service writes to: whether one of its writes failed since the last
    probe, and a probe that writes (True when the write was taken)."""

    name: str
    failed: Callable[[], bool]
    probe: Callable[[], bool]


class DependencyWatch:
    """Probe ``dependencies`` (name, channel; their owners close them) every ``interval``
    seconds, and ``storages`` every ``probe_every`` rounds (every round while one is down or
    has just failed); set ``services`` (and the server's overall status) on ``servicer`` to
    match."""

    def __init__(
        self,
        servicer: health.HealthServicer,
        services: Sequence[str],
        dependencies: Sequence[tuple[str, grpc.Channel]],
        interval: float = 1.0,
        storages: Sequence[Storage] = (),
        probe_every: int = 5,
    ) -> None:
        self._servicer = servicer
        self._services = (*services, "")
        self._dependencies = dependencies
        self._interval = interval
        self._storages = storages
        self._probe_every = probe_every
        self._round = 0
        self._stop = threading.Event()
        self._down: tuple[str, ...] = ()
        self._thread = threading.Thread(target=self._run, daemon=True, name="health-watch")

    def start(self) -> None:
        self._thread.start()

    def check(self) -> tuple[str, ...]:
        """Probe once and set the status; the dependencies that are down."""
        down = tuple(n for n, ch in self._dependencies if not _serving(ch, self._interval))
        full = self._round % self._probe_every == 0
        self._round += 1
        for s in self._storages:
            name = f"{s.name} (refuses writes)"
            if (full or s.failed() or name in self._down) and not s.probe():
                down += (name,)
        if down != self._down:
            if down:
                log.warning("NOT_SERVING: %s not answering", ", ".join(down))
            else:
                log.warning("SERVING again: %s answer", ", ".join(self._down))
            self._down = down
        status = (
            health_pb2.HealthCheckResponse.NOT_SERVING
            if down
            else health_pb2.HealthCheckResponse.SERVING
        )
        for name in self._services:
            self._servicer.set(name, status)
        return down

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.check()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

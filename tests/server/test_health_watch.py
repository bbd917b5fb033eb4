"""Health says NOT_SERVING while a database the service writes to refuses writes (issue #27):
probed with a real write, at once after one of the service's own writes failed."""

from __future__ import annotations

from pathlib import Path

from grpc_health.v1 import health, health_pb2

from hedui.server.health_watch import DependencyWatch, Storage
from hedui.server.requests import RequestBook, StateUnavailable

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE = "hedui.v1.VerificationService"


def _status(servicer: health.HealthServicer, name: str = "") -> int:
    reply = servicer.Check(health_pb2.HealthCheckRequest(service=name), None)  # type: ignore[arg-type]
    return int(reply.status)


def _watch(servicer: health.HealthServicer, book: RequestBook) -> DependencyWatch:
    return DependencyWatch(
        servicer,
        [SERVICE],
        [],
        storages=[Storage("state database", lambda: book.failed, book.probe_write)],
        probe_every=1000,  # a full probe on the first round only, unless a write failed
    )


def test_a_state_database_that_refuses_writes_is_not_serving(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    writable = RequestBook(f"sqlite:///{path}")
    servicer = health.HealthServicer()
    assert _watch(servicer, writable).check() == ()
    assert _status(servicer) == SERVING
    # the same database as a process sees it when it refuses writes (opened read-only, as
    # SQLite does when the file cannot be written)
    readonly = RequestBook(f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        readonly.claim(b"k" * 32, b"a" * 32)
        raise AssertionError("a read-only database took a claim")
    except StateUnavailable:
        pass
    assert readonly.failed
    watch = _watch(servicer, readonly)
    assert watch.check() == ("state database (refuses writes)",)
    assert _status(servicer) == NOT_SERVING
    assert _status(servicer, SERVICE) == NOT_SERVING
    assert watch.check() == ("state database (refuses writes)",)  # still down: probed again
    assert _watch(servicer, writable).check() == ()  # writes taken again
    assert _status(servicer) == SERVING and _status(servicer, SERVICE) == SERVING


def test_a_storage_is_probed_at_once_after_a_failed_write_and_else_every_few_rounds() -> None:
    probes: list[int] = []
    failed = [False]

    def probe() -> bool:
        probes.append(1)
        return True

    watch = DependencyWatch(
        health.HealthServicer(),
        [SERVICE],
        [],
        storages=[Storage("db", lambda: failed[0], probe)],
        probe_every=5,
    )
    for _ in range(10):
        watch.check()
    assert len(probes) == 2  # rounds 0 and 5
    failed[0] = True
    watch.check()
    assert len(probes) == 3

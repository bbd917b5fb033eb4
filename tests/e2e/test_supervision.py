"""Fault injection (issue #10): under load, SIGKILL a connector worker, the registry, the key
custodian and the verification service, on SQLite and on PostgreSQL; each comes back on its own ports without a restart of the deployment, no receipt
returned to a caller is missing from the log, no verdict in the log was withheld from its
caller, and the auditor's check passes."""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hedui.audit.store import LogStore, open_log_engine
from hedui.clients.cli import main
from hedui.clients.deploy import Deployment, prepare
from hedui.clients.intake import IntakeProfile
from hedui.core.rpc import open_channel, wait_healthy
from hedui.proto.v1 import audit_pb2, verification_pb2, verification_pb2_grpc
from tests.e2e.test_faults import HEAD, consent_of, small_deployment


def _until(predicate, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _answers_health(up: Deployment, party: str) -> bool:
    """``party`` answers its gRPC health check as SERVING, on a channel of its own (checked as
    the service's operator would): that it logged "restarted" does not say it listens yet."""
    try:
        address = up.workdir.listening_file(party).read_text(encoding="utf-8").strip()
    except FileNotFoundError:  # started again, not listening yet
        return False
    tls = None if up.settings.insecure else up.workdir.tls("service")
    channel = open_channel(address, tls=tls, server_name=party)
    try:
        wait_healthy(channel, timeout=5)
    except (grpc.RpcError, grpc.FutureTimeoutError, RuntimeError):
        return False
    finally:
        channel.close()
    return True


def _serving(channel: grpc.Channel) -> bool:
    """The server behind ``channel`` answers SERVING, once the channel has connected again."""
    health = health_pb2_grpc.HealthStub(channel)
    try:
        reply = health.Check(health_pb2.HealthCheckRequest(), timeout=10, wait_for_ready=True)
    except grpc.RpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _restarted(up: Deployment, party: str, before: int) -> None:
    """Wait until the supervisor restarted ``party`` and it answers its health check."""
    _until(lambda: up.restarts > before)
    _until(lambda: _answers_health(up, party))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    return "" if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


def test_killed_parties_come_back_and_no_receipt_is_lost(tmp_path: Path, database_url: str) -> None:
    settings = small_deployment(tmp_path, query_timeout_seconds=3.0, database_url=database_url)
    w = prepare(settings, lambda _: None, dt.date.today())
    up = Deployment(settings, w)
    up.start()
    up.supervise()
    profile = IntakeProfile.load(w.intake_profile)
    channel = open_channel(profile.address, tls=profile.tls, server_name=profile.server_name)
    stub = verification_pb2_grpc.VerificationServiceStub(channel)
    returned: dict[str, int] = {}  # request id -> receipt leaf of a returned verdict
    failed: dict[str, str] = {}  # request id -> status of a call that got no verdict
    stop = threading.Event()

    def load() -> None:
        n = 0
        while not stop.is_set():
            rid = f"load-{n}"
            n += 1
            for _attempt in range(20):  # as an intake system does: the same request id again
                try:
                    v = stub.Verify(
                        verification_pb2.VerifyRequest(
                            request_id=rid,
                            id_number=HEAD.value,
                            program="dibao",
                            consent=consent_of(HEAD.value),
                        ),
                        timeout=30,
                    )
                    returned[rid] = v.audit.leaf_index
                    failed.pop(rid, None)
                    break
                except grpc.RpcError as e:
                    failed[rid] = e.code().name  # type: ignore[attr-defined]
                    if e.code() != grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                        break
                    time.sleep(0.5)

    loader = threading.Thread(target=load)
    loader.start()
    try:
        for party in ("hrss", "registry", "custodian", "service"):
            before = up.restarts
            time.sleep(1.0)
            os.kill(up.worker_pid(party), signal.SIGKILL)
            _restarted(up, party, before)
        # the test's own channel to the service may still be backing off from the refused
        # connections while it was down: wait until it is connected and the service SERVING
        _until(lambda: _serving(channel))
        time.sleep(2.0)
        stop.set()
        loader.join(60)
        # recovered: every source answers again
        v = stub.Verify(
            verification_pb2.VerifyRequest(
                request_id="after",
                id_number=HEAD.value,
                program="dibao",
                consent=consent_of(HEAD.value),
            ),
            timeout=30,
            wait_for_ready=True,
        )
        assert not v.failures, v.failures
    finally:
        stop.set()
        channel.close()
        up.stop()
    assert returned and up.restarts == 4
    store = LogStore(open_log_engine(database_url or w.audit_db_url))
    entries = {i: audit_pb2.AuditEntry.FromString(b) for i, b in store.entries(0, 100_000)}
    # 0 lost: every returned receipt points at its verdict
    for rid, leaf in returned.items():
        assert entries[leaf].verdict.request_id == rid and not entries[leaf].verdict.error
    # 0 extra: every verdict in the log for a load request was returned to its caller
    decided = {
        e.verdict.request_id
        for e in entries.values()
        if e.HasField("verdict")
        and not e.verdict.error
        and e.verdict.request_id.startswith("load-")
    }
    assert decided == set(returned)
    # every request entry has exactly one outcome
    requests = [e.request.query_id for e in entries.values() if e.HasField("request")]
    outcomes = [e.verdict.query_id for e in entries.values() if e.HasField("verdict")]
    assert sorted(requests) == sorted(outcomes)
    assert (
        main(
            [
                "audit",
                "verify",
                "--workdir",
                str(w.root),
                "--offline",
                "--state",
                str(tmp_path / "s.json"),
            ]
        )
        == 0
    )


def test_health_says_not_serving_while_the_registry_or_custodian_is_down(tmp_path: Path) -> None:
    """Issue #11 item 8: health said SERVING while every verification failed."""
    settings = small_deployment(tmp_path)
    w = prepare(settings, lambda _: None, dt.date.today())
    up = Deployment(settings, w)
    up.start()  # not supervised yet: a killed party stays down until supervise()
    profile = IntakeProfile.load(w.intake_profile)
    channel = open_channel(profile.address, tls=profile.tls, server_name=profile.server_name)
    health = health_pb2_grpc.HealthStub(channel)

    def status() -> int:
        return int(health.Check(health_pb2.HealthCheckRequest(), timeout=5).status)

    try:
        assert status() == health_pb2.HealthCheckResponse.SERVING
        os.kill(up.worker_pid("custodian"), signal.SIGKILL)
        _until(lambda: status() == health_pb2.HealthCheckResponse.NOT_SERVING, 30)
        os.kill(up.worker_pid("registry"), signal.SIGKILL)
        time.sleep(2)
        assert status() == health_pb2.HealthCheckResponse.NOT_SERVING
        up.supervise()  # both come back, and so does the service's health
        _until(lambda: status() == health_pb2.HealthCheckResponse.SERVING, 60)
    finally:
        channel.close()
        up.stop()

"""One real deployment (`hedui up`, mutual TLS, every connector) per fuzz module, with a stub
for every gRPC service as the party that may call it, and the checks every fuzzed call must pass."""

from __future__ import annotations

import itertools
import re
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hedui.core import packing
from hedui.core.custody import custodian_view
from hedui.core.rpc import open_channel
from hedui.proto.v1 import (
    audit_pb2_grpc,
    connector_pb2,
    connector_pb2_grpc,
    custodian_pb2_grpc,
    verification_pb2_grpc,
)
from tests.e2e.conftest import Up, start_up, stop_up

T = TypeVar("T")

DEADLINE = 10.0  # seconds per call: DEADLINE_EXCEEDED is a hang
# what a status message must never hold: a traceback, an exception's own text, SQL driver text
LEAKS = (
    "Traceback",
    "Exception",
    'File "',
    "sqlite3.",
    "psycopg",
    "sqlalchemy",
    "(Background on this error",
    "Error:",
)
MEMORY_GROWTH_LIMIT = 512 * 1024 * 1024  # bytes of peak RSS any server process may gain


class Finding(AssertionError):
    """A fuzzed call broke a rule; the message names the method, the code and the details."""


def check_status(label: str, e: grpc.RpcError, *, unavailable_ok: bool = False) -> grpc.StatusCode:
    """The status code of a failed call, after the rules every refusal must follow."""
    assert isinstance(e, grpc.Call)
    code, details = e.code(), e.details() or ""
    if code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL):
        # INTERNAL: an exception no handler expected reached the servers' last resort
        raise Finding(f"{label}: {code.name} status: {details[:400]!r}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        raise Finding(f"{label}: no answer within {DEADLINE} s (a hang): {details[:200]!r}")
    if code == grpc.StatusCode.UNAVAILABLE and not unavailable_ok:
        raise Finding(f"{label}: UNAVAILABLE (the server went away?): {details[:400]!r}")
    leaked = [word for word in LEAKS if word in details]
    if leaked:
        raise Finding(f"{label}: {code.name} with internal text {leaked}: {details[:400]!r}")
    return code


def call(label: str, fn: Callable[[], T], *, unavailable_ok: bool = False) -> T | grpc.StatusCode:
    """Run one call; its response, or the status code of a refusal that follows the rules."""
    try:
        return fn()
    except grpc.RpcError as e:
        return check_status(label, e, unavailable_ok=unavailable_ok)


def _peak_rss(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    m = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(m.group(1)) * 1024 if m else 0


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*") if Path(f"/proc/{p}").exists() else ():
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return out


@dataclass(repr=False)
class Deployment:
    up: Up
    config: dict[str, Any]
    connector_ids: list[str]
    applicants: list[str]
    fingerprint: bytes
    epoch: int
    baseline_rss: dict[int, int]
    _channels: dict[tuple[str, str], grpc.Channel] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=itertools.count)

    def __repr__(self) -> str:  # as Hypothesis prints a failing example's arguments
        return f"Deployment({self.up.workdir.root})"

    def address(self, party: str) -> str:
        if party == "service":
            return self.up.address
        if party == "registry":
            return str(self.config["registry"]["address"])
        if party == "custodian":
            return str(self.config["service"]["custodian_address"])
        return str(self.config["connectors"][party])

    def channel(self, party: str, cert: str) -> grpc.Channel:
        """A channel to ``party`` presenting the certificate of ``cert``."""
        key = (party, cert)
        if key not in self._channels:
            self._channels[key] = open_channel(
                self.address(party), tls=self.up.workdir.tls(cert), server_name=party
            )
        return self._channels[key]

    def verification(self) -> verification_pb2_grpc.VerificationServiceStub:
        return verification_pb2_grpc.VerificationServiceStub(self.channel("service", "intake"))

    def audit(self) -> audit_pb2_grpc.AuditServiceStub:
        return audit_pb2_grpc.AuditServiceStub(self.channel("service", "auditor"))

    def registry(self) -> connector_pb2_grpc.RegistryServiceStub:
        return connector_pb2_grpc.RegistryServiceStub(self.channel("registry", "service"))

    def token_authority(self, as_connector: str) -> connector_pb2_grpc.TokenAuthorityServiceStub:
        return connector_pb2_grpc.TokenAuthorityServiceStub(self.channel("registry", as_connector))

    def connector(self, cid: str) -> connector_pb2_grpc.ConnectorServiceStub:
        return connector_pb2_grpc.ConnectorServiceStub(self.channel(cid, "service"))

    def custodian(self) -> custodian_pb2_grpc.CustodianServiceStub:
        return custodian_pb2_grpc.CustodianServiceStub(self.channel("custodian", "service"))

    def fresh_id(self, prefix: str) -> str:
        """An id never used before in this deployment (query ids are granted once)."""
        return f"{prefix}-{next(self._ids)}-{uuid.uuid4().hex[:8]}"

    def batch_layout(self, kind: str) -> connector_pb2.BatchLayout:
        """The layout a connector of ``kind`` answers in, as the verification service sends it."""
        bits = self.up.workdir.keys("custodian").paillier_public().max_plaintext_bits
        return packing.batch_layout_pb(
            custodian_view(self.connector_ids, {}, bits).batch_layouts[kind]
        )

    def healthy(self, party: str) -> None:
        """``party`` answers a health check as SERVING (raises otherwise)."""
        cert = "auditor" if party == "service" else "service"
        stub = health_pb2_grpc.HealthStub(self.channel(party, cert))
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=DEADLINE)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, party

    def deaths(self) -> list[str]:
        """Worker processes the deployment had to restart (each one a crash)."""
        path = self.up.workdir.log_dir / "hedui.log"
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        return [line for line in text.splitlines() if " died (exit " in line]

    def memory_growth(self) -> dict[int, int]:
        """Per server process: how much its peak RSS grew since the deployment was ready."""
        return {
            pid: _peak_rss(pid) - self.baseline_rss.get(pid, 0)
            for pid in _tree(self.up.process.pid)
        }

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    up = start_up(tmp_path_factory.mktemp("fuzz"), households=10)  # it reads the pipes
    try:
        config = tomllib.loads(up.workdir.service_config.read_text(encoding="utf-8"))
        d = Deployment(
            up=up,
            config=config,
            connector_ids=list(config["connectors"]),
            applicants=[a for _, a in up.summary.applicants],
            fingerprint=up.workdir.keys("custodian").paillier_public().fingerprint,
            epoch=up.workdir.keys("registry").token_epoch(),
            baseline_rss={p: _peak_rss(p) for p in _tree(up.process.pid)},
        )
        yield d
        d.close()
    finally:
        stop_up(up)

"""Replicas (issue #12 item 4): two `hedui serve service` processes on one PostgreSQL database,
an intake channel spreading calls round-robin over both, 8 concurrent callers. One replica is
SIGKILLed mid-load; the other carries on (settling the dead one's claims), every request id has
exactly one verdict in one gapless log, every returned receipt points at it, and the auditor's
check passes."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from hedui.audit.store import LogStore, open_log_engine
from hedui.clients.cli import main
from hedui.clients.deploy import Deployment, prepare
from hedui.core.rpc import open_channel
from hedui.proto.v1 import audit_pb2, verification_pb2, verification_pb2_grpc
from tests.e2e.test_faults import HEAD, consent_of, small_deployment

CALLERS = 8
PER_CALLER = 12
RETRY = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.ABORTED,  # "being verified" by the replica that died: settled, then free
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def _second_replica(w_config: Path) -> tuple[subprocess.Popen[bytes], str]:
    config = w_config.with_name("replica-2.toml")
    shutil.copyfile(w_config, config)
    listening = config.parent / "run" / "replica-2.listening"
    listening.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEDUI_")}
    # the settings that differ on one host: its own ports (gRPC and metrics)
    env["HEDUI_ADDRESS"] = "127.0.0.1:0"
    env["HEDUI_METRICS_ADDRESS"] = "127.0.0.1:0"
    log = (config.parent / "replica-2.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hedui.clients.cli", "serve", "service", "--config", str(config)],
        stdout=log,
        stderr=log,
        env=env,
    )
    deadline = time.monotonic() + 120
    while not listening.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "replica-2 did not start"
        time.sleep(0.1)
    return proc, listening.read_text().strip()


@pytest.mark.postgres
def test_two_replicas_one_log_each_request_once(tmp_path: Path, pg_url: str) -> None:
    settings = small_deployment(tmp_path, database_url=pg_url, query_timeout_seconds=5.0)
    w = prepare(settings, lambda _: None, dt.date.today())
    up = Deployment(settings, w)
    up.start()
    try:
        replica, second = _second_replica(w.service_config)
    except BaseException:  # the first deployment's processes are not left running
        up.stop()
        raise
    channel = open_channel(f"{up.address},{second}", tls=w.tls("intake"), server_name="service")
    stub = verification_pb2_grpc.VerificationServiceStub(channel)
    returned: dict[str, tuple[int, int]] = {}  # request id -> (receipt leaf, decision)
    gave_up: dict[str, str] = {}
    lock = threading.Lock()
    half = threading.Event()

    def caller(n: int) -> None:
        for i in range(PER_CALLER):
            rid = f"r-{n}-{i}"
            if i == PER_CALLER // 2:
                half.set()
            deadline = time.monotonic() + 120
            while True:
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
                    with lock:
                        returned[rid] = (v.audit.leaf_index, v.decision)
                    break
                except grpc.RpcError as e:
                    code = e.code()  # type: ignore[attr-defined]
                    if code not in RETRY or time.monotonic() > deadline:
                        with lock:
                            gave_up[rid] = code.name
                        break
                    time.sleep(1.0)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(CALLERS)]
    try:
        for t in threads:
            t.start()
        assert half.wait(120)
        os.kill(replica.pid, signal.SIGKILL)  # mid-load, with calls in flight on it
        for t in threads:
            t.join(300)
    finally:
        channel.close()
        if replica.poll() is None:
            replica.kill()
        up.stop()
    assert not gave_up, gave_up
    assert len(returned) == CALLERS * PER_CALLER
    store = LogStore(open_log_engine(pg_url))
    size = store.size()
    entries = {i: audit_pb2.AuditEntry.FromString(b) for i, b in store.entries(0, size)}
    assert sorted(entries) == list(range(size))  # one gapless log
    verdicts: dict[str, list[int]] = {}
    for i, e in entries.items():
        if e.HasField("verdict") and not e.verdict.error and e.verdict.request_id.startswith("r-"):
            verdicts.setdefault(e.verdict.request_id, []).append(i)
    # each request id verified exactly once across the replicas, and its caller got that one
    assert {rid: len(leaves) for rid, leaves in verdicts.items() if len(leaves) != 1} == {}
    for rid, (leaf, decision) in returned.items():
        assert verdicts[rid] == [leaf], rid
        assert entries[leaf].verdict.decision == decision
    # every request entry has exactly one outcome (the dead replica's: "abandoned")
    requests = sorted(e.request.query_id for e in entries.values() if e.HasField("request"))
    outcomes = sorted(e.verdict.query_id for e in entries.values() if e.HasField("verdict"))
    assert requests == outcomes
    state = tmp_path / "auditor-state.json"
    assert (
        main(["audit", "verify", "--workdir", str(w.root), "--offline", "--state", str(state)]) == 0
    )

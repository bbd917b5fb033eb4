"""The custodian's witness under concurrent load (issue #27 item 5), as BENCHMARKS.md reports it:
8 callers deciding one household each plus a recheck of 121-household chunks, through a real
custodian gRPC server, while other entries keep growing the log every 2 ms. Prints the calls, the
failures and how often a call was told the witness had moved on.

    .venv/bin/python -m tests.benchmarks.witness_race [CALLS_PER_CALLER] [CHUNKS]
"""

from __future__ import annotations

import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from hedui.audit.log import AuditLog
from hedui.audit.store import LogStore, open_log_engine
from hedui.core import rpc
from hedui.core.custody import CUSTODIAN_ID, CUSTODIAN_SERVICE
from hedui.core.rpc import create_server
from hedui.custodian.keeper import KeyCustodian
from hedui.custodian.service import CustodianServicer
from hedui.custodian.witness import DecryptionJournal, LogWitness
from hedui.proto.v1 import audit_pb2, custodian_pb2_grpc
from hedui.server.custodian_client import RemoteCustodian
from hedui.server.evidence import log_evidence
from tests.custodian.test_keeper import (
    BANKS,
    BANKS_ONLY,
    KEY,
    LOG_KEY,
    ORIGIN,
    PUB,
    banks,
    grant_for,
    households,
)

CALLERS, CHUNK = 8, 121


def main(calls: int, chunks: int) -> str:
    root = Path(tempfile.mkdtemp())
    log = AuditLog(
        LogStore(open_log_engine(f"sqlite:///{root / 'log.db'}")),
        origin=ORIGIN,
        signing_key=LOG_KEY,
    )
    custodian = KeyCustodian(
        KEY,
        BANKS_ONLY,
        min_banks=3,
        witness=LogWitness(LOG_KEY.public_key(), ORIGIN, root / "witness.json"),
        journal=DecryptionJournal(root / "decryptions.jsonl"),
    )
    servicer = CustodianServicer(custodian)
    server = create_server(
        "127.0.0.1:0",
        tls=None,
        roles={CUSTODIAN_SERVICE: {"service"}},
        register=[lambda s: custodian_pb2_grpc.add_CustodianServiceServicer_to_server(servicer, s)],
        party=CUSTODIAN_ID,
    )
    remote = RemoteCustodian(f"127.0.0.1:{server.port}", None, PUB, 40.0)
    lock = threading.Lock()
    count = {"ok": 0, "failed": 0, "moved": 0}
    reasons: dict[str, int] = {}
    real = remote._stub.DecryptBatch

    def counting(request: Any, timeout: float) -> Any:  # counts the witness's "moved on"
        try:
            return real(request, timeout=timeout)
        except grpc.RpcError as e:
            for d in rpc.error_details(e):
                if any(getattr(v, "type", "") == "WITNESS" for v in getattr(d, "violations", ())):
                    with lock:
                        count["moved"] += 1
            raise

    remote._stub.DecryptBatch = counting  # type: ignore[assignment]

    def logged(q: str, n: int) -> list[int]:
        e = audit_pb2.AuditEntry(request=audit_pb2.RequestEntry(query_id=q))
        return [r.leaf_index for r in log.append([e] * n)]

    def caller(name: str, n: int, runs: int) -> None:
        tokens = households(n)
        rnd = random.Random(name)
        for i in range(runs):
            q = f"{name}-{i}"
            leaves = logged(q, n)
            answers = banks(q, tokens)
            time.sleep(rnd.uniform(0, 0.03))  # the fan-out to the connectors
            try:
                remote.decrypt(
                    q, answers, n, grant_for(q, BANKS, tokens), log_evidence(log, leaves)
                )
                with lock:
                    count["ok"] += 1
            except Exception as e:
                with lock:
                    count["failed"] += 1
                    reasons[str(e)] = reasons.get(str(e), 0) + 1

    done = threading.Event()

    def grower() -> None:
        while not done.wait(0.002):
            logged("other", 1)

    threads = [threading.Thread(target=caller, args=(f"c{i}", 1, calls)) for i in range(CALLERS)]
    threads.append(threading.Thread(target=caller, args=("recheck", CHUNK, chunks)))
    g = threading.Thread(target=grower)
    g.start()
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    g.join()
    server.stop(0)
    return (
        f"calls={count['ok'] + count['failed']} ok={count['ok']} failed={count['failed']} "
        f"witness_moved={count['moved']} seconds={time.monotonic() - start:.1f} "
        f"log_size={log.store.size()} reasons={reasons}"
    )


if __name__ == "__main__":
    print(
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 20,
            int(sys.argv[2]) if len(sys.argv) > 2 else 4,
        )
    )

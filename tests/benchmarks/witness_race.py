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

from hedui.core import rpc
from tests.custodian.test_keeper import BANKS, banks, grant_for, households
from tests.custodian.test_service import Served

CALLERS, CHUNK = 8, 121


def main(calls: int, chunks: int) -> str:
    served = Served(Path(tempfile.mkdtemp()))  # the custodian over gRPC, as its tests serve it
    lock = threading.Lock()
    count = {"ok": 0, "failed": 0}
    reasons: dict[str, int] = {}

    def caller(name: str, n: int, runs: int) -> None:
        tokens = households(n)
        rnd = random.Random(name)
        for i in range(runs):
            q = f"{name}-{i}"
            leaves = served.logged(q, n)
            answers = banks(q, tokens)
            time.sleep(rnd.uniform(0, 0.03))  # the fan-out to the connectors
            try:
                served.decrypt(q, answers, n, grant_for(q, BANKS, tokens), leaves)
                with lock:
                    count["ok"] += 1
            except Exception as e:
                with lock:
                    count["failed"] += 1
                    reasons[str(e)] = reasons.get(str(e), 0) + 1

    done = threading.Event()

    def grower() -> None:
        while not done.wait(0.002):
            served.logged("other", 1)

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
    served.server.stop(0)
    moved = sum(  # the calls the custodian answered "the witness moved on"
        1
        for e in served.errors
        for d in rpc.error_details(e)
        if any(getattr(v, "type", "") == "WITNESS" for v in getattr(d, "violations", ()))
    )
    return (
        f"calls={count['ok'] + count['failed']} ok={count['ok']} failed={count['failed']} "
        f"witness_moved={moved} seconds={time.monotonic() - start:.1f} "
        f"log_size={served.log.store.size()} reasons={reasons}"
    )


if __name__ == "__main__":
    print(
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 20,
            int(sys.argv[2]) if len(sys.argv) > 2 else 4,
        )
    )

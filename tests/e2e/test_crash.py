"""Issue #10, finding 2, rerun: SIGKILL of the service in the middle of a recheck. After the
restart, the same `hedui recheck` completes: the results file has exactly one line per household,
every household has exactly one verdict in the log, every request entry exactly one outcome, and
no claim is left waiting for a lease."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from hedui.audit.store import LogStore, open_log_engine
from hedui.proto.v1 import audit_pb2
from tests.e2e.conftest import start_up, stop_up

HOUSEHOLDS = 150


def _recheck(work: Path, roster: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable, "-m", "hedui.clients.cli", "recheck", "--workdir", str(work),
            "--ids", str(roster), "--out", str(out), "--quiet", "--campaign", "crash",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_a_service_killed_mid_recheck_checks_no_household_twice(tmp_path: Path) -> None:
    up = start_up(tmp_path, households=HOUSEHOLDS, seed=5)
    work = up.workdir.root
    roster = tmp_path / "roster.txt"
    roster.write_text("\n".join(i for _, i in up.summary.applicants) + "\n")
    out = tmp_path / "verdicts.jsonl"
    try:
        run = _recheck(work, roster, out)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not out.exists() or out.stat().st_size == 0):
            time.sleep(0.05)
        os.kill(up.process.pid, signal.SIGKILL)  # mid-way: some chunks done, one in flight
        up.process.wait(30)
        run.kill()  # the operator stops the stuck command too
        run.wait(30)
    except BaseException:
        stop_up(up)
        raise
    time.sleep(2)  # the orphaned connector workers notice their parent is gone
    up = start_up(tmp_path, households=HOUSEHOLDS, seed=5)
    try:
        run = _recheck(work, roster, out)
        _stdout, stderr = run.communicate(timeout=600)
        assert run.returncode == 0, stderr
        lines = [json.loads(x) for x in out.read_text().splitlines()]
        assert len(lines) == HOUSEHOLDS
        assert len({x["request_id"] for x in lines}) == HOUSEHOLDS
        assert all("decision" in x for x in lines), [x for x in lines if "decision" not in x][:3]
        store = LogStore(open_log_engine(up.workdir.audit_db_url))
        entries = [audit_pb2.AuditEntry.FromString(b) for _, b in store.entries(0, 100_000)]
        requests = Counter(
            (e.request.request_id, e.request.query_id) for e in entries if e.HasField("request")
        )
        outcomes = Counter(
            (e.verdict.request_id, e.verdict.query_id) for e in entries if e.HasField("verdict")
        )
        recheck_requests = {k for k in requests if k[0].startswith("recheck-crash-")}
        assert all(n == 1 for n in requests.values())
        assert {k: outcomes[k] for k in recheck_requests} == dict.fromkeys(recheck_requests, 1)
        verdicts = Counter(
            e.verdict.request_id
            for e in entries
            if e.HasField("verdict")
            and not e.verdict.error
            and e.verdict.request_id.startswith("recheck-crash-")
        )
        assert len(verdicts) == HOUSEHOLDS and set(verdicts.values()) == {1}
        # the auditor: the log verifies; a decryption cut off by the kill shows (exit 3), not 2
        r = up.cli("audit", "verify", "--workdir", str(work), "--state", str(tmp_path / "s.json"))
        assert r.returncode in (0, 3), r.stderr
    finally:
        stop_up(up)

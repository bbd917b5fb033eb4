"""Issue #10, finding 2, rerun: SIGKILL of the service at random points during a recheck of 300
households, five times. `hedui up` restarts the service on the same port each time, and the same
`hedui recheck` command rides over the restarts (retrying with backoff); at the end the results file has exactly one line per household with the verdict an uninterrupted run gives (the
independent oracle), every household has exactly one verdict in the log, every request entry
exactly one outcome, and no claim is left waiting for a lease."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from hedui.audit.store import LogStore, open_log_engine
from hedui.proto.v1 import audit_pb2
from hedui.server.verification import CHUNKS_IN_FLIGHT
from tests.e2e import oracle
from tests.e2e.conftest import TODAY, Up, start_up, stop_up

HOUSEHOLDS = 300
KILLS = 5


def _recheck(up: Up, roster: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable, "-m", "hedui.clients.cli", "recheck", "--workdir", str(up.workdir.root),
            "--ids", str(roster), "--out", str(out), "--quiet", "--round", "crash",
            *up.authorisation_args(),
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _lines(out: Path) -> int:
    return len(out.read_text().splitlines()) if out.exists() else 0


def _pid(path: Path, other_than: int = 0, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = int(path.read_text())
        except (OSError, ValueError):
            pid = 0
        if pid and pid != other_than:
            return pid
        time.sleep(0.1)
    raise AssertionError(f"{path} names no new process")


def _first_request_logged(up: Up, timeout: float = 120.0) -> None:
    """Wait until the service has logged a request of the campaign (the recheck's process and
    its first chunk take a moment to start, longer on a loaded machine)."""
    store = LogStore(open_log_engine(up.workdir.audit_db_url))
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        size = store.size()
        for _, data in store.entries(seen, size):
            e = audit_pb2.AuditEntry.FromString(data)
            if e.HasField("request") and e.request.request_id.startswith("recheck-crash-"):
                return
        seen = size
        time.sleep(0.05)
    raise AssertionError("the recheck logged no request")


def test_a_service_killed_five_times_mid_recheck_checks_no_household_twice(tmp_path: Path) -> None:
    rng = random.Random(10)
    out = tmp_path / "verdicts.jsonl"
    roster = tmp_path / "roster.txt"
    up = start_up(tmp_path, households=HOUSEHOLDS, seed=5)
    roster.write_text("\n".join(i for _, i in up.summary.applicants) + "\n")
    pid_file = up.workdir.pid_file("service")
    try:
        run = _recheck(up, roster, out)
        pid, progress = _pid(pid_file), []
        _first_request_logged(up)  # the kills start once the recheck is under way, not before
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.2, 4.0))  # a random point: mid-chunk, between chunks, …
            os.kill(pid, signal.SIGKILL)
            progress.append(_lines(out))
            pid = _pid(pid_file, other_than=pid)  # `hedui up` restarts it on the same port
        # the same command rides over the restarts (retrying with backoff) and finishes
        _stdout, stderr = run.communicate(timeout=600)
        assert run.returncode == 0, stderr
        assert progress[0] < HOUSEHOLDS, f"the kills came too late: {progress}"
        lines = [json.loads(x) for x in out.read_text().splitlines()]
        assert len(lines) == HOUSEHOLDS
        assert len({x["request_id"] for x in lines}) == HOUSEHOLDS
        assert all("decision" in x for x in lines), [x for x in lines if "decision" not in x][:3]

        # the verdicts an uninterrupted run gives
        households, person = oracle.load(up.data)
        want = {
            n: oracle.expected(households[hid], person, TODAY.isoformat())["decision"]
            for n, (hid, _) in enumerate(up.summary.applicants, start=1)
        }
        got = {x["line"]: x["decision"] for x in lines}
        assert got == want

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
        abandoned = len(recheck_requests) - HOUSEHOLDS
        # at most the chunks a campaign stream keeps in flight, each time (121 households each)
        assert 0 < abandoned <= KILLS * CHUNKS_IN_FLIGHT * 121, (abandoned, progress)
        # run again: nothing left to do, nothing asked twice
        again = _recheck(up, roster, out)
        assert again.wait(120) == 0
        assert len(out.read_text().splitlines()) == HOUSEHOLDS
        # the auditor: the log verifies; a decryption cut off by a kill shows (exit 3), not 2
        r = up.cli(
            "audit",
            "verify",
            "--workdir",
            str(up.workdir.root),
            "--state",
            str(tmp_path / "s.json"),
        )
        assert r.returncode in (0, 3), r.stderr
    finally:
        stop_up(up)

"""Issue #22 item 4: a provincial campaign on this machine, as an operator runs it from the
README — `hedui population generate` → `hedui up` → `hedui recheck` over every household head →
`hedui audit verify` — with the default settings. Records each phase's wall time, decisions per
second, each party's peak RSS and CPU, and the audit log's size.

HEDUI_BENCH_CAMPAIGN_HOUSEHOLDS sets the population (default 100000)."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

from tests.e2e.conftest import TODAY

HOUSEHOLDS = int(os.environ.get("HEDUI_BENCH_CAMPAIGN_HOUSEHOLDS", "100000"))


def _hedui(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "hedui.clients.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    return r, time.monotonic() - start


def _status(pid: int) -> dict[str, int]:
    """Peak RSS (kB) and CPU (ms) of a live process."""
    peak = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmHWM:")
    )
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) * 1000 // os.sysconf("SC_CLK_TCK")
    return {"peak_rss_kb": peak, "cpu_ms": cpu}


def _children(pid: int) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return [int(p) for p in out.split()]


def test_campaign(benchmark: Any, tmp_path: Path) -> None:
    extra: dict[str, Any] = {"households": HOUSEHOLDS}
    r, extra["generate_s"] = _hedui(
        "population", "generate", "--households", str(HOUSEHOLDS), "--seed", "7", "--out", "data/",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    start = time.monotonic()
    up = subprocess.Popen(
        [sys.executable, "-m", "hedui.clients.cli", "up", "--data", "data/", "--workdir", "w/"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    tail: deque[str] = deque(maxlen=50)
    try:
        assert up.stdout is not None
        line = ""
        while True:
            line = up.stdout.readline()
            if "ready" in line or not line:
                break
        assert re.search(r"127\.0\.0\.1:\d+", line), line + (up.stderr.read() if up.stderr else "")
        extra["up_s"] = round(time.monotonic() - start, 1)
        for stream in (up.stdout, up.stderr):
            threading.Thread(target=tail.extend, args=(stream,), daemon=True).start()
        run = tmp_path / "w" / "run"
        parties = {
            n: int((run / f"{n}.pid").read_text()) for n in ("service", "registry", "custodian")
        }
        workers = [p for p in _children(up.pid) if p not in parties.values()]
        with (tmp_path / "data" / "registry.csv").open(encoding="utf-8") as f:
            heads = [row[1] for row in csv.reader(f) if len(row) > 2 and row[2] == "head"]
        (tmp_path / "roster.txt").write_text("\n".join(heads) + "\n")
        (tmp_path / "authorisation.pdf").write_text("复核授权 2026-11\n")
        before = {p: _status(p)["cpu_ms"] for p in (*parties.values(), *workers)}

        def recheck() -> None:
            r, seconds = _hedui(
                "recheck", "--workdir", "w/", "--ids", "roster.txt", "--quiet",
                "--authorisation", "authorisation.pdf", "--authorised-on", TODAY.isoformat(),
                cwd=tmp_path,
            )  # fmt: skip
            assert r.returncode == 0, r.stderr + "".join(tail)
            extra["recheck_s"] = round(seconds, 1)
            extra["recheck_summary"] = r.stdout.strip().splitlines()[0]

        benchmark.pedantic(recheck, rounds=1, iterations=1)
        rows = [
            json.loads(x)
            for x in (tmp_path / "roster.verdicts.jsonl").read_text(encoding="utf-8").splitlines()
        ]
        decisions = Counter(row.get("decision", "refused") for row in rows)
        assert len(rows) == len(heads) and decisions["refused"] == 0, decisions
        extra["decisions"] = dict(decisions)
        extra["decisions_per_second"] = round(len(rows) / extra["recheck_s"], 1)
        for name, pid in parties.items():
            s = _status(pid)
            extra[f"{name}_peak_rss_mb"] = round(s["peak_rss_kb"] / 1024)
            extra[f"{name}_cpu_ms_per_household"] = round(
                (s["cpu_ms"] - before[pid]) / len(rows), 2
            )
        ws = [_status(p) for p in workers]
        extra["connector_worker_peak_rss_mb"] = [round(s["peak_rss_kb"] / 1024) for s in ws]
        extra["connector_workers_cpu_ms_per_household"] = round(
            sum(s["cpu_ms"] - before[p] for s, p in zip(ws, workers, strict=True)) / len(rows), 2
        )
        r, extra["audit_verify_s"] = _hedui("audit", "verify", "--workdir", "w/", cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        dbs = sorted((tmp_path / "w").rglob("audit*.sqlite*"))
        extra["audit_log_mb"] = round(sum(p.stat().st_size for p in dbs) / 2**20, 1)
        extra["audit_log_files"] = [p.relative_to(tmp_path).as_posix() for p in dbs]
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGTERM)
            try:
                up.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
    benchmark.extra_info.update(extra)
    print("\n" + "\n".join(f"{k}: {v}" for k, v in extra.items()))

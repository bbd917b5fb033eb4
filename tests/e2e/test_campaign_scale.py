"""A campaign at the scale a province runs one (issue #22): the README's own commands, with the
default settings, on a few thousand households. Every roster line must end with a decision
that agrees with an independent oracle; nothing is written as "over the rate".

HEDUI_E2E_CAMPAIGN_HOUSEHOLDS sets the population (default 2000)."""

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
from collections import deque
from pathlib import Path

from tests.e2e import oracle
from tests.e2e.conftest import TODAY

HOUSEHOLDS = int(os.environ.get("HEDUI_E2E_CAMPAIGN_HOUSEHOLDS", "2000"))


def hedui(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hedui.clients.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_readme_recheck_decides_every_household_with_default_settings(
    tmp_path: Path,
) -> None:
    r = hedui(
        "population", "generate", "--households", str(HOUSEHOLDS), "--seed", "7", "--out", "data/",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
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
        deadline, line = time.monotonic() + 600, ""
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            if "ready" in line or not line:
                break
        assert re.search(r"127\.0\.0\.1:\d+", line), line
        for stream in (up.stdout, up.stderr):
            threading.Thread(target=tail.extend, args=(stream,), daemon=True).start()
        # the README: awk -F, '$3=="head" {print $2}' data/registry.csv > roster.txt
        with (tmp_path / "data" / "registry.csv").open(encoding="utf-8") as f:
            heads = [row[1] for row in csv.reader(f) if len(row) > 2 and row[2] == "head"]
        (tmp_path / "roster.txt").write_text("\n".join(heads) + "\n")
        (tmp_path / "authorisation.pdf").write_text("复核授权 2026-11\n")
        r = hedui(
            "recheck", "--workdir", "w/", "--ids", "roster.txt",
            "--authorisation", "authorisation.pdf", "--authorised-on", TODAY.isoformat(),
            cwd=tmp_path, timeout=1800,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr + "".join(tail)
        rows = [
            json.loads(x)
            for x in (tmp_path / "roster.verdicts.jsonl").read_text(encoding="utf-8").splitlines()
        ]
        assert sorted(row["line"] for row in rows) == list(range(1, len(heads) + 1))
        refused = [row for row in rows if "decision" not in row]
        assert not refused, refused[:3]
        assert f"{len(heads)} decided" in r.stdout and "refused" not in r.stdout
        households, person = oracle.load(tmp_path / "data")
        household_of = {i: h for h, members in households.items() for i in members}
        for row in rows:
            members = households[household_of[heads[row["line"] - 1]]]
            want = oracle.expected(members, person, TODAY.isoformat())
            assert (row["decision"], row["benefit_fen"]) == (
                want["decision"],
                want["benefit_fen"],
            ), row["line"]
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGTERM)
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)

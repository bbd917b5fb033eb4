"""A campaign at the scale a province runs one (issue #22): the README's own commands, with the
default settings, on a few thousand households. Every roster line must end with a decision
that agrees with an independent oracle; nothing is written as "over the rate".

HEDUI_E2E_CAMPAIGN_HOUSEHOLDS sets the population (default 2000)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.e2e import oracle
from tests.e2e.conftest import TODAY, readme_up

HOUSEHOLDS = int(os.environ.get("HEDUI_E2E_CAMPAIGN_HOUSEHOLDS", "2000"))


def test_the_readme_recheck_decides_every_household_with_default_settings(
    tmp_path: Path,
) -> None:
    up = readme_up(tmp_path, HOUSEHOLDS)
    try:
        r = subprocess.run(
            [sys.executable, "-m", "hedui.clients.cli",
             "recheck", "--workdir", "w/", "--ids", "roster.txt", "--campaign", up.campaign],
            cwd=tmp_path, capture_output=True, text=True, timeout=1800, check=False,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr + "".join(up.tail)
    finally:
        up.stop()
    # no plaintext ID number of anyone checked in anything the deployment wrote (the
    # register aside), nor in the results file (masked IDs only)
    households, person = oracle.load(tmp_path / "data")
    everyone = {i for members in households.values() for i in members}
    candidates = re.compile(rb"[0-9]{17}[0-9X]")
    written = [p for p in (tmp_path / "w").rglob("*") if p.is_file()]
    written.append(tmp_path / "roster.verdicts.jsonl")
    for path in written:
        if "registry" in path.relative_to(tmp_path).parts:
            continue
        found = {m.decode() for m in candidates.findall(path.read_bytes())} & everyone
        assert not found, f"{len(found)} plaintext ID number(s) in {path}"
    rows = [
        json.loads(x)
        for x in (tmp_path / "roster.verdicts.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert sorted(row["line"] for row in rows) == list(range(1, len(up.heads) + 1))
    refused = [row for row in rows if "decision" not in row]
    assert not refused, refused[:3]
    assert f"{len(up.heads)} decided" in r.stdout and "refused" not in r.stdout
    household_of = {i: h for h, members in households.items() for i in members}
    for row in rows:
        members = households[household_of[up.heads[row["line"] - 1]]]
        want = oracle.expected(members, person, TODAY.isoformat())
        assert (row["decision"], row["benefit_fen"]) == (want["decision"], want["benefit_fen"]), (
            row["line"]
        )

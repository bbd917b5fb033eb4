"""Issue #14 item 4: every command that prints data has --json, with times in their zone."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.conftest import Up


def _json(up: Up, *args: str) -> dict:
    r = up.cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    doc: dict = json.loads(r.stdout)
    return doc


def test_audit_commands_print_json_with_zoned_times(up: Up, tmp_path: Path) -> None:
    work = str(up.workdir.root)
    shown = _json(up, "audit", "show", "--workdir", work, "--last", "5")
    assert len(shown["entries"]) == 5 and shown["size"] >= 5
    assert [e["index"] for e in shown["entries"]] == list(range(shown["size"] - 5, shown["size"]))
    assert all(e["time"].endswith("+08:00") and "kind" in e for e in shown["entries"])
    state = str(tmp_path / "auditor.json")
    first = _json(up, "audit", "verify", "--workdir", work, "--state", state)
    assert first["ok"] is True and first["consistent_with_size"] is None
    assert first["entries"] == first["tree_size"] == sum(first["kinds"].values())
    again = _json(up, "audit", "verify", "--workdir", work, "--state", state)
    assert again["consistent_with_size"] == first["tree_size"]
    found = _json(up, "audit", "search", "--workdir", work, "--caller", "hedui-service")
    assert found["logged"] is True and found["entries"]
    assert {e["caller"] for e in found["entries"]} == {"hedui-service"}
    alerts = _json(up, "audit", "alerts", "--workdir", work)
    assert isinstance(alerts["alerts"], list)
    assert all(a["kind"] == "alert" for a in alerts["alerts"])


def test_policy_explain_prints_json(up: Up) -> None:
    doc = _json(up, "policy", "explain", "--program", "dibao", "--region", "demo")
    assert doc["program"] == "dibao" and doc["policy_version"]
    standard = next(p for p in doc["parameters"] if p["name"] == "dibao_standard")
    assert isinstance(standard["value"], int) and standard["unit"].startswith("fen")

"""What `hedui up` prints once ready: the service's address first, then each process's /metrics."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hedui.clients import cli
from hedui.clients.deploy import Deployment, DeploySettings, PartyProcess
from hedui.core.workdir import Workdir


def test_ready_line_then_metrics_of_each_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = Workdir(tmp_path / "w")
    d = Deployment(DeploySettings(workdir=w.root), w, env={})
    for parties in (["registry"], ["bank-01", "bank-02", "hrss"], ["custodian"], ["service"]):
        d._processes.append(PartyProcess(parties, [], tmp_path / "x.log"))
    d.metrics = {"registry": "127.0.0.1:9101", "custodian": "127.0.0.1:9103"}
    d.metrics |= {c: "127.0.0.1:9102" for c in ("bank-01", "bank-02", "hrss")}
    d.metrics["service"] = "127.0.0.1:9104"
    cli._print_ready(d, "127.0.0.1:50051")
    lines = capsys.readouterr().out.splitlines()
    # the first line is what scripts wait for: "ready" and the service's address first
    assert "ready" in lines[0]
    m = re.search(r"127\.0\.0\.1:\d+", lines[0])
    assert m is not None and m.group(0) == "127.0.0.1:50051"
    assert str(w.root / "run" / "metrics.txt") in lines[1]
    assert lines[2].split() == ["registry", "http://127.0.0.1:9101/metrics"]
    assert lines[3].split() == [
        "3",
        "connectors",
        "(bank-01",
        "…",
        "hrss)",
        "http://127.0.0.1:9102/metrics",
    ]
    assert lines[5].split() == ["service", "http://127.0.0.1:9104/metrics"]

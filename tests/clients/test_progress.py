"""Issue #25 item 10: `hedui up` counts its connectors as they start, and `hedui recheck`'s
bar counts the households settled (lines written), not the bursts they came in."""

from __future__ import annotations

import io
import re
import sys
import time
from pathlib import Path

from hedui.clients.deploy import Deployment, DeploySettings, PartyProcess, Progress
from hedui.clients.recheck import ProgressBar
from hedui.core.workdir import Workdir


def _shown(stream: io.StringIO) -> str:
    """What the terminal shows: the last redraw of the bar."""
    return stream.getvalue().split("\r")[-1]


def test_the_bar_catches_up_with_a_burst_of_households() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, interval=0.2)
    for done in range(1, 122):  # a chunk's results arrive at once, then the service works on
        bar(done, 250)
    assert "1/250" in _shown(stream)
    deadline = time.monotonic() + 5
    while "121/250" not in _shown(stream) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "121/250" in _shown(stream), stream.getvalue()
    bar(250, 250)  # the last is drawn at once, with its newline
    assert _shown(stream).startswith("[" + "#" * 30 + "] 250/250") and stream.getvalue().endswith(
        "\n"
    )


def test_progress_lines_are_spaced_and_never_look_ready() -> None:
    now = [0.0]
    said: list[str] = []
    shown = Progress(said.append, interval=2.0, clock=lambda: now[0])
    for step in range(100):  # 10 s, a call every 0.1 s
        now[0] = step / 10
        shown(lambda: f"started {step}/87 connectors")
    assert said == [f"started {n}/87 connectors" for n in (20, 40, 60, 80)]


def test_up_counts_connectors_as_their_process_starts_them(tmp_path: Path) -> None:
    w = Workdir(tmp_path / "w")
    w.log_dir.mkdir(parents=True)
    d = Deployment(DeploySettings(workdir=w.root), w, env={})
    parties = ["bank-01", "bank-02", "bank-03", "bank-04"]
    files = [w.listening_file(c) for c in parties]
    # a stand-in for a connectors' process: one party listens every 0.3 s
    script = (
        "import pathlib, sys, time\n"
        "for n, f in enumerate(sys.argv[1:]):\n"
        "    time.sleep(0.3)\n"
        "    p = pathlib.Path(f); p.parent.mkdir(parents=True, exist_ok=True)\n"
        "    p.write_text(f'127.0.0.1:{7000 + n}')\n"
        "time.sleep(30)\n"
    )
    p = PartyProcess(parties, [sys.executable, "-c", script, *map(str, files)], w.log_dir / "c.log")
    said: list[str] = []
    shown = Progress(said.append, interval=0.25)
    d._launch(p)
    try:
        ports = d._ready(
            p,
            waiting=lambda: shown(lambda: f"started {sum(f.exists() for f in files)}/4 connectors"),
        )
    finally:
        assert p.process is not None
        p.process.kill()
        p.process.wait()
    assert ports == {c: 7000 + n for n, c in enumerate(parties)}
    assert said, "no progress while the connectors started"
    counts = [int(re.fullmatch(r"started (\d)/4 connectors", line).group(1)) for line in said]  # type: ignore[union-attr]
    assert counts == sorted(counts) and len(set(counts)) > 1, said
    assert not any("ready" in line or "127.0.0.1" in line for line in said)

"""Run one party's servers in this process until SIGTERM or SIGINT (``hedui serve``).

Each party's ``serve`` module starts its servers and hands them here: the address each listens
on is logged and written to its party's ``run/listening`` file (how `hedui up`, a supervisor or
a health probe learns a port given as 0), the address of the process's ``/metrics`` (if a
config names one) to ``run/NAME.metrics`` beside it, and on a signal the servers stop
gracefully.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hedui.core.keyfiles import replace_public
from hedui.core.metrics import serve_metrics

log = logging.getLogger("hedui.serve")


class Stoppable(Protocol):
    @property
    def port(self) -> int: ...

    def stop(self, grace: float | None = ...) -> None: ...


@dataclass(frozen=True)
class Started:
    """A party's running server, as its config placed it."""

    party: str
    configured: str  # the address of its config, HOST:PORT (port 0: any free one)
    server: Stoppable
    config_path: Path
    metrics_address: str = ""  # HOST:PORT of the process's /metrics ("" = none)

    @property
    def address(self) -> str:
        return f"{self.configured.rsplit(':', 1)[0]}:{self.server.port}"

    @property
    def listening_file(self) -> Path:
        """``DIR/run/NAME.listening`` for ``--config DIR/NAME.toml``."""
        return self.config_path.parent / "run" / f"{self.config_path.stem}.listening"

    @property
    def metrics_file(self) -> Path:
        """``DIR/run/NAME.metrics``: HOST:PORT of the process's ``/metrics``, while it serves."""
        return self.listening_file.with_name(f"{self.config_path.stem}.metrics")


def announce(started: Started, metrics: str = "") -> None:
    """Log the party's address and write it to its ``run/`` file; ``metrics`` (the process's
    /metrics address, if it serves one) first, so whoever sees the listening file finds both."""
    log.info("%s listening on %s (pid %d)", started.party, started.address, os.getpid())
    started.listening_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if metrics:
        replace_public(started.metrics_file, f"{metrics}\n".encode())
    replace_public(started.listening_file, f"{started.address}\n".encode())


def start_metrics(address: str) -> str:
    """Serve this process's Prometheus metrics on ``address`` (HOST:PORT), unless empty;
    the address it serves on (with the port chosen for port 0), or ""."""
    if not address:
        return ""
    server = serve_metrics(address)
    serving = f"{address.rsplit(':', 1)[0]}:{server.server_port}"
    log.info("metrics on http://%s/metrics", serving)
    return serving


def run_until_signalled(started: Sequence[Started], grace: float = 2.0) -> None:
    """Announce every server, serve the process's metrics (on the first address a config
    names), wait for SIGTERM or SIGINT, stop them (the last started first)."""
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        metrics = start_metrics(next((s.metrics_address for s in started if s.metrics_address), ""))
        for s in started:
            announce(s, metrics)
        while not stop.wait(1.0):
            pass
        log.info("stopping %s", ", ".join(s.party for s in started))
    finally:
        for s in reversed(started):
            s.listening_file.unlink(missing_ok=True)
            s.metrics_file.unlink(missing_ok=True)
            s.server.stop(grace)
        for sig, handler in previous.items():
            signal.signal(sig, handler)

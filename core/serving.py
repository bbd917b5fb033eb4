"""Run one party's servers in this process until SIGTERM or SIGINT (``hedui serve``).

Each party's ``serve`` module starts its servers and hands them here: the address each listens
on is logged and written to its party's ``run/listening`` file (how `hedui up`, a supervisor or
a health probe learns a port given as 0), and on a signal the servers stop gracefully.
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

from hedui.core.metrics import serve_metrics

log = logging.getLogger("hedui.serve")


class Stoppable(Protocol):
    @property
    def port(self) -> int: ...

    def stop(self, grace: float | None = ...) -> None: ...


@dataclass(frozen=True)
class Started:
    party: str
    host: str
    server: Stoppable
    listening_file: Path | None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.server.port}"


def listening_file(config_path: Path) -> Path:
    """Where ``hedui serve --config DIR/NAME.toml`` writes its address: ``DIR/run/NAME.listening``."""
    return config_path.parent / "run" / f"{config_path.stem}.listening"


def host_of(address: str) -> str:
    return address.rsplit(":", 1)[0]


def announce(started: Started) -> None:
    log.info("%s listening on %s (pid %d)", started.party, started.address, os.getpid())
    if started.listening_file is not None:
        started.listening_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = started.listening_file.with_name(started.listening_file.name + ".tmp")
        tmp.write_text(f"{started.address}\n", encoding="utf-8")
        tmp.replace(started.listening_file)


def start_metrics(address: str) -> None:
    """Serve this process's Prometheus metrics on ``address`` (HOST:PORT), unless empty."""
    if address:
        server = serve_metrics(address)
        log.info("metrics on http://%s:%d/metrics", host_of(address), server.server_port)


def run_until_signalled(started: Sequence[Started], grace: float = 2.0) -> None:
    """Announce every server, wait for SIGTERM or SIGINT, stop them (the last started first)."""
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for s in started:
            announce(s)
        while not stop.wait(1.0):
            pass
        log.info("stopping %s", ", ".join(s.party for s in started))
    finally:
        for s in reversed(started):
            if s.listening_file is not None:
                s.listening_file.unlink(missing_ok=True)
            s.server.stop(grace)
        for sig, handler in previous.items():
            signal.signal(sig, handler)

"""Log records of every hedui process: times in the deployment's zone, one file per workdir.

`hedui up` and each worker process it starts (connectors, registry, custodian, service) append
to ``WORKDIR/log/hedui.log``; a worker never writes to its parent's pipes, which nobody may read
(a full pipe would block every thread that logs)."""

from __future__ import annotations

import logging
from pathlib import Path

from hedui.core.clock import DEPLOYMENT

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"


class ZonedFormatter(logging.Formatter):
    """Log times in the deployment's zone, with the zone written out (not the machine's)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return DEPLOYMENT.show(int(record.created * 1000))


def log_to_file(log_dir: Path) -> None:
    """Also log (INFO and up) to ``log_dir/hedui.log``."""
    handler = logging.FileHandler(log_dir / "hedui.log", encoding="utf-8")
    handler.setFormatter(ZonedFormatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


def worker_logging(log_dir: Path) -> None:
    """A worker process's logging: the workdir's log file only (never stderr)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    try:
        log_to_file(log_dir)
    except OSError:  # no log folder (a test's bare workdir): keep quiet rather than block
        root.addHandler(logging.NullHandler())

"""Log records of every hedui process: times in the deployment's zone, written out.

`hedui up` logs to ``WORKDIR/log/hedui.log``; each party it starts (``hedui serve``) writes its
lines to stderr, which `hedui up` sends to ``WORKDIR/log/<party>.log``. Both log JSON lines
(python-json-logger) with an ISO 8601 time carrying its offset, so that a log collector needs
no guess about the zone. No log line carries an ID number (the tests grep for them)."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from pathlib import Path

from pythonjsonlogger.json import JsonFormatter

from hedui.core.clock import DEPLOYMENT

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"


class ZonedFormatter(logging.Formatter):
    """Log times in the deployment's zone, with the zone written out (not the machine's)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return DEPLOYMENT.show(int(record.created * 1000))


# libraries that log every step at INFO (WeasyPrint: 11 lines per PDF, fontTools' subsetter,
# Alembic's plugin set-up: 7 lines at every start; its "Running upgrade" lines stay)
QUIET_LIBRARIES = ("weasyprint", "fontTools", "alembic.runtime.plugins")


def quiet_libraries() -> None:
    """Only warnings and errors from the libraries that narrate their work at INFO."""
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)


def log_to_file(log_dir: Path) -> None:
    """Also log (INFO and up) to ``log_dir/hedui.log``, as JSON lines like every party's log."""
    handler = logging.FileHandler(log_dir / "hedui.log", encoding="utf-8")
    handler.setFormatter(ZonedJsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    quiet_libraries()


class ZonedJsonFormatter(JsonFormatter):
    """JSON lines: ``time`` (ISO 8601 in the deployment's zone, offset included), ``level``,
    ``logger``, ``pid``, ``message``."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
            rename_fields={
                "asctime": "time",
                "levelname": "level",
                "name": "logger",
                "process": "pid",
            },
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return dt.datetime.fromtimestamp(record.created, DEPLOYMENT.zone).isoformat(
            timespec="milliseconds"
        )


def configure_party_logging(fmt: str) -> None:
    """A party's process (``hedui serve``): INFO and up to stderr, as JSON lines or text."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ZonedJsonFormatter() if fmt == "json" else ZonedFormatter(LOG_FORMAT))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    quiet_libraries()

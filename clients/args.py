"""Argument types and path checks shared by the command-line modules."""

from __future__ import annotations

import argparse
import datetime as dt
import errno
import os
import tempfile
from pathlib import Path

from hedui.clients.errors import ClientError
from hedui.core.clock import parse_date


def date_arg(text: str) -> dt.date:
    try:
        return parse_date(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a number of seconds above 0")
    return value


def database_url(text: str) -> str:
    """A SQLAlchemy URL of a database hedui supports (SQLite or PostgreSQL)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        backend = make_url(text).get_backend_name()
    except ArgumentError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a database URL; e.g. postgresql+psycopg://user@host/db"
        ) from None
    if backend not in ("sqlite", "postgresql"):
        raise argparse.ArgumentTypeError(
            f"{backend} is not supported; use postgresql+psycopg://… or sqlite:///…"
        )
    return text


def why_unwritable(path: Path, e: OSError) -> str:
    """Why ``path`` cannot be written, in words: the ancestor that is a file, or the system's."""
    for p in path.parents:
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                return f"{p} is a file, not a folder"
            break
    if e.errno == errno.ENOENT:
        return f"the folder {path.parent} does not exist"
    return (e.strerror or str(e)).lower()


def unwritable(path: Path, option: str, e: OSError) -> ClientError:
    return ClientError(
        f"cannot write {path}: {why_unwritable(path, e)}; "
        f"give {option} a path in a folder you can write"
    )


def _probe(folder: Path) -> None:
    """Create and remove a file in ``folder``: the one test that also holds for root."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=".hedui-probe-")
    os.close(fd)
    os.unlink(name)


def check_writable_file(path: Path, option: str, *, make_parents: bool = False) -> None:
    """Raise ClientError unless the file ``path`` can be created or replaced.

    Called before a command contacts anything, so a bad path costs nothing. With
    ``make_parents`` the missing folders above it are created (as the command would).
    """
    if path.is_dir():
        raise ClientError(f"{option} {path} is a folder; give the path of a file")
    try:
        if make_parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            with path.open("a", encoding="utf-8"):
                pass
        else:
            _probe(path.parent)
    except OSError as e:
        raise unwritable(path, option, e) from None


def check_writable_dir(path: Path, option: str) -> None:
    """Create the folder ``path`` if needed; raise ClientError unless files can be written in it."""
    if path.exists() and not path.is_dir():
        raise ClientError(f"{option} {path} is a file; give the path of a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        _probe(path)
    except OSError as e:
        raise ClientError(
            f"cannot write in {path}: {why_unwritable(path, e)}; "
            f"give {option} a folder you can write"
        ) from None


def check_period(since: dt.date | dt.datetime | None, until: dt.date | dt.datetime | None) -> None:
    """Refuse ``--since`` after ``--until`` (both days are included)."""
    if since is not None and until is not None and since > until:
        raise ClientError(
            f"--since {since:%Y-%m-%d} is after --until {until:%Y-%m-%d}; "
            "give the earlier day first (both days are included)"
        )

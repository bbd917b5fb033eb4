"""Fixtures for the command-line tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clients.helpers import closed_port


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """`hedui serve` run in-process points the root logger at the stderr pytest captured for
    that test; later tests would get "--- Logging error ---" tracebacks on theirs."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    """A regular file: any path under it cannot be created, not even by root."""
    path = tmp_path / "a-file"
    path.write_text("not a folder\n")
    return path


@pytest.fixture
def stopped_workdir(tmp_path: Path) -> Path:
    """A workdir whose intake profile points at a port nobody listens on (a stopped `hedui up`)."""
    w = tmp_path / "work"
    w.mkdir()
    (w / "intake.toml").write_text(
        f'address = "127.0.0.1:{closed_port()}"\nserver_name = "service"\ninsecure = true\n'
    )
    return w


@pytest.fixture
def roster(tmp_path: Path) -> Path:
    path = tmp_path / "roster.txt"
    path.write_text("11010519491231002X\n")
    return path

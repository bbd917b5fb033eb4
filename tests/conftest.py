"""Fixtures for every test package: the real PostgreSQL server on 127.0.0.1:5432, in a schema of
its own per test (required in CI, skipped elsewhere when it is not running); the root logger as
each test found it; the ``e2e`` mark on every test that runs real deployments (``scripts/test
--quick`` leaves them out)."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

# the packages whose tests start real deployments (processes, sockets, 2048-bit keys)
END_TO_END = tuple(Path(__file__).parent / d for d in ("e2e", "fuzz"))


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(END_TO_END[0]) or item.path.is_relative_to(END_TO_END[1]):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A command run in-process (`hedui serve`, `hedui up`) points the root logger at the
    stderr pytest captured for that test (closed after it) or at a file; a later test's log
    line, from any thread (a supervisor's "restarted"), would print "--- Logging error ---
    ValueError: I/O operation on closed file" instead."""
    root = logging.getLogger()
    before, level = [h for h in root.handlers if not _pytests(h)], root.level
    yield
    for h in [h for h in root.handlers if not _pytests(h) and h not in before]:
        root.removeHandler(h)
        with contextlib.suppress(OSError, ValueError):
            h.close()
    for h in before:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)


def _pytests(handler: logging.Handler) -> bool:
    """pytest's own capturing handlers, which it adds and removes around each phase."""
    return type(handler).__module__ == "_pytest.logging"


PG_BASE = os.environ.get("HEDUI_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_available() -> bool:
    try:
        with create_engine(PG_BASE).connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


PG = _pg_available()


def pg_schema(prefix: str) -> Iterator[str]:
    """A PostgreSQL schema of its own, as a URL whose search path is that schema; dropped
    afterwards (required in CI, skipped elsewhere when the server is not running)."""
    if not PG:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL on 127.0.0.1:5432 is required in CI")
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    schema = f"{prefix}_{secrets.token_hex(6)}"
    admin = create_engine(PG_BASE, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    with admin.connect() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from pg_schema("t")

"""Fixtures for every test package: the real PostgreSQL server on 127.0.0.1:5432, in a schema of
its own per test (required in CI, skipped elsewhere when it is not running)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

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

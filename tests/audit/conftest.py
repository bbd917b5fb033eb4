"""Log databases for the audit tests: SQLite in a temporary folder, and the real PostgreSQL
server (the ``pg_url`` fixture of tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.sqlite'}"
    return str(request.getfixturevalue("pg_url"))

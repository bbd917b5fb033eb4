"""`hedui db status` exits 0 only when the service can serve its databases as they are; a
database behind this release, of a newer release, or that cannot be read is named, with what
to do, and exits 1. On a real SQLite file and on PostgreSQL (a schema of its own)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from hedui.audit.schema import AUDIT_SCHEMA
from hedui.core.migrations import head, upgrade
from hedui.server.config import ServiceConfig
from hedui.server.fanout import Endpoint
from hedui.server.schema import SERVICE_SCHEMA
from tests import release_0_1_0
from tests.clients.helpers import run
from tests.conftest import pg_schema


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """One database holding both the audit log and the state, as a small deployment has it."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'service.db'}"
    else:
        yield from pg_schema("dbstatus")


def _config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "service.toml"
    config = ServiceConfig(
        keys_dir=tmp_path / "keys",
        registry=Endpoint("registry", "127.0.0.1:1"),
        connectors=(Endpoint("bank-01", "127.0.0.1:2"),),
        audit_database=url,
        service_database=url,
    )
    path.write_text(config.to_toml(), encoding="utf-8")
    return path


def _status(capsys: pytest.CaptureFixture[str], config: Path) -> tuple[int, str, str]:
    return run(capsys, "db", "status", "--config", str(config))


def test_a_current_database_is_served(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    upgrade(db_url, AUDIT_SCHEMA)
    upgrade(db_url, SERVICE_SCHEMA)
    code, out, err = _status(capsys, _config(tmp_path, db_url))
    assert code == 0, out + err
    assert out == (
        f"the audit log: at {head(AUDIT_SCHEMA)}; this release needs {head(AUDIT_SCHEMA)} "
        "(up to date)\n"
        f"the service's state: at {head(SERVICE_SCHEMA)}; this release needs "
        f"{head(SERVICE_SCHEMA)} (up to date)\n"
    )


def test_a_database_that_needs_an_upgrade_exits_non_zero_until_upgraded(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = create_engine(db_url)
    release_0_1_0.create(old)  # what release 0.1.0's service left
    old.dispose()
    config = _config(tmp_path, db_url)
    code, out, err = _status(capsys, config)
    assert code == 1 and "Traceback" not in err
    hint = f"behind: back it up, then run `hedui db upgrade --config {config}`"
    assert out.count(hint) == 2, out
    assert "the service's state: at service_0001's schema, not under migration" in out

    code, out, _ = run(capsys, "db", "upgrade", "--config", str(config))
    assert code == 0, out
    code, out, _ = _status(capsys, config)
    assert code == 0 and out.count("(up to date)") == 2, out


def test_an_earlier_revision_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'service.db'}"
    upgrade(url, AUDIT_SCHEMA)
    upgrade(url, SERVICE_SCHEMA)
    engine = create_engine(url)
    with engine.begin() as conn:  # as a service of the release before the watch-list left it
        conn.execute(text("UPDATE hedui_service_version SET version_num = 'service_0003'"))
    engine.dispose()
    code, out, _ = _status(capsys, _config(tmp_path, url))
    assert code == 1
    assert "the audit log: at audit_0001; this release needs audit_0001 (up to date)" in out
    assert "the service's state: at service_0003; this release needs service_0005 (behind:" in out


def test_a_database_of_a_newer_release_is_told_apart(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    upgrade(db_url, AUDIT_SCHEMA)
    upgrade(db_url, SERVICE_SCHEMA)
    engine = create_engine(db_url)
    with engine.begin() as conn:  # a later release migrated it further
        conn.execute(text("UPDATE hedui_service_version SET version_num = 'service_0099'"))
    engine.dispose()
    code, out, err = _status(capsys, _config(tmp_path, db_url))
    assert code == 1 and "Traceback" not in err
    known = int(head(SERVICE_SCHEMA).rsplit("_", 1)[1])
    assert (
        "the service's state: at service_0099, written by a newer release of hedui (schema 99, "
        f"this release knows up to {known}): upgrade hedui, do not downgrade the database"
    ) in out, out
    assert "hedui db upgrade" not in out  # never the advice that would make it worse
    assert "the audit log: at audit_0001; this release needs audit_0001 (up to date)" in out


def test_a_database_that_cannot_be_read_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "service.db"
    broken.write_bytes(b"not an SQLite file, but long enough to be read as one " * 40)
    code, out, err = _status(capsys, _config(tmp_path, f"sqlite:///{broken}"))
    assert code == 1 and out == "" and "Traceback" not in err
    assert err.count("hedui: error: ") == 2, err
    assert "the audit log's database cannot be read: DatabaseError" in err
    assert "the service's state's database cannot be read: DatabaseError" in err
    assert broken.read_bytes().startswith(b"not an SQLite file")  # left as it was


def test_an_empty_database_is_served(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _status(capsys, _config(tmp_path, f"sqlite:///{tmp_path / 'new.db'}"))
    assert code == 0, out
    assert out.count("(empty: the service makes its tables when it starts)") == 2, out
    assert out.count("does not exist yet; check the path") == 2, out
    assert not (tmp_path / "new.db").exists()  # asking made no file

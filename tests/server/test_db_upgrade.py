"""`hedui db upgrade`: the service's databases brought to this release's schema by Alembic
migration, from an empty database and from release 0.1.0's, on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, insert, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from hedui.audit import store as audit_store
from hedui.audit.auditor import StoreSource, verify_log
from hedui.audit.log import AuditLog
from hedui.audit.schema import AUDIT_SCHEMA
from hedui.audit.store import LogStore, StorageError, open_log_engine
from hedui.clients.cli import main
from hedui.core.migrations import SchemaError, upgrade
from hedui.proto.v1 import audit_pb2
from hedui.server import alerts as _alerts  # noqa: F401  (its tables join the metadata)
from hedui.server import requests as service_state
from hedui.server import schema as service_schema
from hedui.server import watchlist as _watchlist  # noqa: F401
from hedui.server.alerts import AlertBook
from hedui.server.config import ServiceConfig
from hedui.server.fanout import Endpoint
from hedui.server.requests import RequestBook, StateSealer, StateUnavailable
from hedui.server.watchlist import WatchList
from tests import release_0_1_0
from tests.conftest import pg_schema

ORIGIN = "test.example/upgrade"
KEY = Ed25519PrivateKey.generate()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """One database holding both the audit log and the state, as a small deployment has it."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'service.db'}"
    else:
        yield from pg_schema("up")


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


def _entry(i: int) -> audit_pb2.AuditEntry:
    return audit_pb2.AuditEntry(
        time_unix_ms=1_700_000_000_000 + i,
        caller="intake",
        request=audit_pb2.RequestEntry(request_id=f"r-{i}", query_id=f"q-{i}"),
    )


def _db(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["db", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_an_empty_database_is_brought_to_this_release(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, db_url)
    code, out, _ = _db(["status", "--config", str(config)], capsys)
    assert code == 0 and out.count("at empty") == 2, out

    code, out, _ = _db(["upgrade", "--config", str(config)], capsys)
    assert code == 0, out
    assert "the audit log: applied audit_0001; now at audit_0001" in out
    assert (
        "the service's state: applied service_0001, service_0002, service_0003, service_0004, service_0005; now at service_0005"
        in out
    )

    code, out, _ = _db(["upgrade", "--config", str(config)], capsys)
    assert code == 0 and out.count("nothing to do") == 2, out
    code, out, _ = _db(["status", "--config", str(config)], capsys)
    assert out.count("(up to date)") == 2, out

    # the log and the state work on it; the log is append-only
    log = AuditLog(LogStore(open_log_engine(db_url)), origin=ORIGIN, signing_key=KEY)
    log.append([_entry(0), _entry(1)])
    with pytest.raises(SQLAlchemyError, match="append-only"), log.store.engine.begin() as conn:
        conn.execute(text("DELETE FROM log_entry"))
    book = RequestBook(db_url)
    assert book.claim(b"k" * 32, b"a" * 32) is None
    book.close()


def test_the_migrations_make_the_tables_the_code_uses(db_url: str) -> None:
    """Alembic's own comparison: the migrated database against the models, table by table."""
    upgrade(db_url, AUDIT_SCHEMA)
    open_log_engine(db_url).dispose()
    RequestBook(db_url).close()
    engine = create_engine(db_url)
    with engine.connect() as conn:
        for metadata in (audit_store.Base.metadata, service_schema.Base.metadata):
            tables = set(metadata.tables)  # the other schema's tables are not this one's
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "include_name": lambda name, kind, _parents, tables=tables: (
                        kind != "table" or name in tables
                    ),
                },
            )
            assert compare_metadata(context, metadata) == []
    engine.dispose()


def test_a_release_0_1_0_database_is_adopted_and_upgraded(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # release 0.1.0's service wrote a log, a verdict, an open claim and a consent case
    old = create_engine(db_url)
    release_0_1_0.create(old)
    old_log = AuditLog(LogStore(old), origin=ORIGIN, signing_key=KEY)
    for i in range(5):
        old_log.append([_entry(i)])
    old_root = old_log.store.root(5)
    with old.begin() as conn:
        conn.execute(
            insert(service_state.VerdictRecord).values(
                request_key=b"d" * 32, application=b"a" * 32, verdict=b"v", claimed_at=1.0
            )
        )
        conn.execute(
            insert(service_state.VerdictRecord).values(
                request_key=b"o" * 32,
                application=b"a" * 32,
                claimed_at=2.0,
                query_id="q-4",
                from_size=4,
            )
        )
        conn.execute(
            insert(service_state.ConsentCase).values(case_key=b"c" * 32, household=b"h" * 32)
        )
    old.dispose()

    # this release refuses to run on it, and says what to do
    with pytest.raises(StorageError, match=r"from before migrations.*hedui db upgrade --config"):
        open_log_engine(db_url)
    with pytest.raises(
        StateUnavailable, match=r"from before migrations.*hedui db upgrade --config"
    ):
        RequestBook(db_url)

    config = _config(tmp_path, db_url)
    code, out, _ = _db(["status", "--config", str(config)], capsys)
    assert "at audit_0001's schema, not under migration" in out
    assert "at service_0001's schema, not under migration" in out
    code, out, _ = _db(["upgrade", "--config", str(config)], capsys)
    assert code == 0, out
    assert "the audit log: a database from before migrations, recorded at audit_0001" in out
    assert "the audit log: already at audit_0001; nothing to do" in out
    assert "the service's state: a database from before migrations, recorded at service_0001" in out
    assert (
        "the service's state: applied service_0002, service_0003, service_0004, service_0005; now at service_0005"
        in out
    )

    # the log goes on from where 0.1.0 left it: same root, gapless, verifiable, append-only
    log = AuditLog(LogStore(open_log_engine(db_url)), origin=ORIGIN, signing_key=KEY)
    assert log.store.root(5) == old_root
    log.append([_entry(5)])
    assert log.store.size() == 6
    verify_log(StoreSource(log.store), KEY.public_key(), ORIGIN)
    with pytest.raises(SQLAlchemyError, match="append-only"), log.store.engine.begin() as conn:
        conn.execute(text("UPDATE log_entry SET entry = entry"))

    # the state's rows are kept; the claim 0.1.0 left open is settled by the next start
    book = RequestBook(db_url)
    assert [c.query_id for c in book.open_claims()] == ["q-4"]
    assert book.claim(b"d" * 32, b"a" * 32) == (b"a" * 32, b"v")
    assert book.bind_case(b"c" * 32, b"h" * 32)
    book.close()


def test_a_database_of_a_build_after_0_1_0_is_adopted_at_its_revision(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The builds between 0.1.0 and migrations added the claim's owner at start."""
    old = create_engine(db_url)
    release_0_1_0.create(old)
    with old.begin() as conn:
        conn.execute(text("ALTER TABLE verdict_record ADD COLUMN owner VARCHAR(64)"))
    old.dispose()
    code, out, _ = _db(["upgrade", "--config", str(_config(tmp_path, db_url))], capsys)
    assert code == 0, out
    assert "the service's state: a database from before migrations, recorded at service_0002" in out
    assert (
        "the service's state: applied service_0003, service_0004, service_0005; now at service_0005"
        in out
    )


def _at_revision(url: str, revision: str) -> None:
    """A state database made by an earlier release, at ``revision``."""
    engine = create_engine(url)
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", service_schema.SERVICE_SCHEMA.location)
        config.attributes["connection"] = conn
        config.attributes["version_table"] = service_schema.SERVICE_SCHEMA.version_table
        command.upgrade(config, revision)
    engine.dispose()


def test_the_plaintext_benefits_of_watches_and_alerts_are_dropped_or_sealed(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue #24 item 4: a database of service_0004 held each watch's and each alert's benefit in
    plaintext. The upgrade drops the watch's (nothing reads it) and keeps the alert's, which the
    service seals when it starts; the alert reads as before."""
    _at_revision(db_url, "service_0004")
    old = create_engine(db_url)
    watch = {
        "watch_id": "w1", "enrol_key": b"e" * 32, "pseudonym": b"p" * 32, "program": "dibao",
        "region": "demo", "district": "330102", "masked": "330**************2",
        "applicant_token": b"t" * 32, "handle": b"h" * 60, "consent": b"c", "until": "2027-01-01",
        "enrolled_on": "2026-11-01", "enrolled_by": "intake", "decision": "ELIGIBLE",
        "benefit_fen": 126_000,
    }  # fmt: skip
    alert = {
        "alert_id": "a1", "watch_id": "w1", "district": "330102", "masked": "330**************2",
        "program": "dibao", "kind": "death", "event_on": "2026-11-01", "raised_on": "2026-11-02",
        "due_on": "2026-11-17", "escalate_on": "2026-11-22", "decision_before": "INELIGIBLE",
        "decision_after": "ELIGIBLE", "benefit_fen": 98_765, "suggest": "", "state": "open",
        "version": 1, "recheck_request_id": "monitor-event-1", "level_logged": 0,
    }  # fmt: skip
    with old.begin() as conn:
        for table, row in (("watch", watch), ("alert", alert)):
            names = ", ".join(row)
            conn.execute(
                text(f"INSERT INTO {table} ({names}) VALUES ({', '.join(':' + n for n in row)})"),
                row,
            )
    old.dispose()

    code, out, _ = _db(["upgrade", "--config", str(_config(tmp_path, db_url))], capsys)
    assert code == 0, out
    assert "the service's state: applied service_0005; now at service_0005" in out
    engine = create_engine(db_url)
    with engine.connect() as conn:
        columns = {t: {c["name"] for c in inspect(conn).get_columns(t)} for t in ("watch", "alert")}
    assert "benefit_fen" not in columns["watch"] | columns["alert"]
    assert "benefit_sealed" in columns["alert"]

    sealer = StateSealer(b"s" * 32)
    book = AlertBook(engine, lambda: dt.date(2026, 11, 3), sealer=sealer)  # seals at open
    with engine.connect() as conn:
        stored = bytes(conn.execute(text("SELECT benefit_sealed FROM alert")).scalar_one())
    assert stored.startswith(StateSealer.MARK) and (98_765).to_bytes(8, "big") not in stored
    a = book.get("a1")
    assert (a.benefit_fen, a.decision_after, a.state, a.due_on) == (
        98_765,
        "ELIGIBLE",
        "open",
        dt.date(2026, 11, 17),
    )
    assert book.seal_legacy() == 0  # once
    w = WatchList(engine, lambda: dt.date(2026, 11, 3), lambda: 0).get("w1")
    assert (w.decision, w.until) == ("ELIGIBLE", dt.date(2027, 1, 1))
    engine.dispose()


def test_a_database_that_is_neither_empty_nor_hedui_s_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'other.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE log_entry (idx INTEGER PRIMARY KEY, other BLOB)"))
    engine.dispose()
    with pytest.raises(
        SchemaError,
        match=r"no schema hedui ever made.*missing tables: log_checkpoint, log_node.*other columns: log_entry",
    ):
        upgrade(url, AUDIT_SCHEMA)
    with pytest.raises(StorageError, match="log_entry"):
        open_log_engine(url)
    engine = create_engine(url)
    with engine.begin() as conn:  # nothing was created on the way
        names = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master"))}
    assert names == {"log_entry"}


def test_a_database_of_a_newer_release_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    upgrade(url, AUDIT_SCHEMA)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE hedui_audit_version SET version_num = 'audit_0099'"))
    engine.dispose()
    for attempt in (lambda: upgrade(url, AUDIT_SCHEMA), lambda: open_log_engine(url)):
        with pytest.raises((SchemaError, StorageError), match=r"audit_0099.*newer hedui"):
            attempt()


def test_a_bad_config_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _db(["upgrade", "--config", str(tmp_path / "missing.toml")], capsys)
    assert code == 1 and err.startswith("hedui: error:") and "Traceback" not in err
    assert "missing.toml" in err

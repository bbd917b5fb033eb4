"""Database schemas by Alembic migration: the audit log's and the service state's.

Each schema has its own migration scripts (``hedui.audit:migrations``, ``hedui.server:migrations``)
and its own version table, so both may live in one PostgreSQL database. The operator brings a
database to this release's schema with ``hedui db upgrade --config FILE``; a party opening its
database creates the schema in an empty one, goes on at this release's revision, and otherwise
refuses with the command to run (:func:`ensure`).

A database from before migrations (release 0.1.0, or a later build) has no version table:
``upgrade`` checks that its tables and columns are exactly one known shape, records it at that
shape's revision and applies the rest; any other database is refused and left as it is.

Every upgrade runs in one transaction, serialised (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: an
advisory lock), so replicas starting together migrate once.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, inspect, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from hedui.core.config import unusable_url
from hedui.core.errors import HeduiError


class SchemaError(HeduiError):
    """A database whose schema this release cannot use, or cannot bring up to date."""


@dataclass(frozen=True)
class Schema:
    """One party's tables under migration."""

    name: str  # for people: "the audit log", "the service's state"
    location: str  # the package resource of its scripts, e.g. "hedui.audit:migrations"
    version_table: str
    baseline: str  # the revision of release 0.1.0's schema
    # release 0.1.0's tables and their columns, exactly: a database without a version table is
    # recorded at the baseline only if it has these
    baseline_columns: Mapping[str, frozenset[str]]
    # later shapes a database had before migrations (the builds between release 0.1.0 and
    # this one): revision -> the columns that differ from the baseline's, table by table
    unversioned: Mapping[str, Mapping[str, frozenset[str]]] = field(default_factory=dict)

    def shapes(self) -> list[tuple[str, dict[str, frozenset[str]]]]:
        """Every known schema without a version table, with the revision it is recorded at."""
        out = [(self.baseline, dict(self.baseline_columns))]
        for revision, changed in self.unversioned.items():
            out.append((revision, {**self.baseline_columns, **changed}))
        return out


@dataclass(frozen=True)
class Upgraded:
    schema: Schema
    before: str | None  # None: an empty database
    after: str
    applied: tuple[str, ...]  # the revisions applied, oldest first
    adopted: bool  # a database from before migrations, recorded at ``before``


def _config(schema: Schema, conn: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", schema.location)
    config.attributes["connection"] = conn
    config.attributes["version_table"] = schema.version_table
    return config


def run_env() -> None:
    """The body of every ``env.py``: migrate on the connection :func:`upgrade` passes in."""
    from alembic import context

    conn = context.config.attributes["connection"]
    context.configure(
        connection=conn,
        version_table=context.config.attributes["version_table"],
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def head(schema: Schema) -> str:
    """This release's revision of ``schema``."""
    found = _scripts(schema).get_current_head()
    if found is None:  # pragma: no cover - the package ships its scripts
        raise SchemaError(f"{schema.name} has no migration scripts installed")
    return found


def _scripts(schema: Schema) -> ScriptDirectory:
    return _scripts_at(schema.location)


@functools.cache
def _scripts_at(location: str) -> ScriptDirectory:
    """The installed migration scripts, read once per process (every open checks them)."""
    config = Config()
    config.set_main_option("script_location", location)
    return ScriptDirectory.from_config(config)


def revisions(schema: Schema, since: str | None) -> tuple[str, ...]:
    """The revisions after ``since`` (None: all), oldest first."""
    walked = [s.revision for s in _scripts(schema).walk_revisions(base="base", head="heads")]
    walked.reverse()
    if since is None:
        return tuple(walked)
    return tuple(walked[walked.index(since) + 1 :]) if since in walked else tuple(walked)


def _lock_key(schema: Schema) -> int:
    digest = hashlib.sha256(b"hedui-migrate\0" + schema.version_table.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _lock(conn: Connection, schema: Schema) -> None:
    """Serialise migrations: SQLite's write lock at once, PostgreSQL's advisory lock."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_lock_key(schema)})")
    elif conn.dialect.name == "sqlite":
        driver = conn.connection.dbapi_connection
        if driver is not None and not driver.in_transaction:  # pysqlite runs DDL outside one
            conn.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def _transaction(url: str, schema: Schema, doing: str = "migrated") -> Iterator[Connection]:
    """One migration transaction on the database at ``url`` (``doing``: for the message
    when the database cannot be used)."""
    try:
        engine = create_engine(url, hide_parameters=True)
    except (SQLAlchemyError, ImportError) as e:
        raise SchemaError(
            f"{schema.name}'s database URL cannot be used ({unusable_url(e)}): give a SQLAlchemy URL such as "
            "sqlite:///path or postgresql+psycopg://user@host/db"
        ) from None
    try:
        with engine.connect() as conn, conn.begin():
            _lock(conn, schema)
            yield conn
    except SQLAlchemyError as e:
        raise SchemaError(
            f"{schema.name}'s database cannot be {doing}: {e.__class__.__name__}: {e}"
        ) from None
    finally:
        engine.dispose()


def _current(conn: Connection, schema: Schema) -> str | None:
    context = MigrationContext.configure(
        conn, opts={"version_table": schema.version_table, "transactional_ddl": True}
    )
    return context.get_current_revision()


def _present(conn: Connection, schema: Schema) -> dict[str, frozenset[str]]:
    """The schema's baseline tables this database has, with their columns."""
    inspector = inspect(conn)
    have = set(inspector.get_table_names())
    return {
        t: frozenset(c["name"] for c in inspector.get_columns(t))
        for t in schema.baseline_columns
        if t in have
    }


def _adoptable(conn: Connection, schema: Schema) -> str | None:
    """The revision an unversioned database is recorded at (None: it is empty); a database
    of no known shape is refused, naming what differs, and left as it is."""
    present = _present(conn, schema)
    if not present:
        return None
    for revision, columns in schema.shapes():
        if present == columns:
            return revision
    missing = sorted(set(schema.baseline_columns) - set(present))
    differ = sorted(t for t in present if present[t] != schema.baseline_columns[t])
    raise SchemaError(
        f"{schema.name}'s database has some of hedui's tables but no {schema.version_table} "
        f"table, and no schema hedui ever made (missing tables: {', '.join(missing) or '-'}; "
        f"tables with other columns: {', '.join(differ) or '-'}); nothing was changed in it: "
        "restore it from a backup, or give the service another database"
    )


def upgrade(url: str, schema: Schema) -> Upgraded:
    """Bring the database at ``url`` to this release's revision of ``schema``."""
    target = head(schema)
    with _transaction(url, schema) as conn:
        before = _current(conn, schema)
        adopted = False
        shape = _adoptable(conn, schema) if before is None else None
        if shape is not None:
            command.stamp(_config(schema, conn), shape)
            before, adopted = shape, True
        _refuse_unknown(schema, before)
        applied = revisions(schema, before)
        if applied:
            command.upgrade(_config(schema, conn), "head")
        after = _current(conn, schema)
    if after != target:  # pragma: no cover - alembic stopped short
        raise SchemaError(f"{schema.name} stopped at revision {after}, not {target}")
    return Upgraded(schema, before, target, applied, adopted)


def _refuse_unknown(schema: Schema, revision: str | None) -> None:
    if revision is not None and revision not in revisions(schema, None):
        raise SchemaError(
            f"{schema.name}'s database is at revision {revision}, which this release does not "
            "know: it was written by a newer hedui; run that release"
        )


def ensure(conn: Connection, schema: Schema) -> None:
    """Open-time check, in the caller's transaction on its own engine: create the schema in an
    empty database, accept this release's revision, refuse anything else, saying how to
    upgrade it."""
    target = head(schema)
    _lock(conn, schema)
    current = _current(conn, schema)
    if current == target:
        return
    shape = _adoptable(conn, schema) if current is None else None
    if current is None and shape is None:
        command.upgrade(_config(schema, conn), "head")
        return
    _refuse_unknown(schema, current)
    raise SchemaError(
        f"{schema.name}'s database is at {current or f'{shape} (from before migrations)'}, and this "
        f"release needs {target}: back it up, then run `hedui db upgrade --config FILE` with "
        "the service's config"
    )


def current(url: str, schema: Schema) -> tuple[str, str]:
    """The database's revision of ``schema`` (in words when it has none) and this release's."""
    with _transaction(url, schema) as conn:
        found = _current(conn, schema)
        if found is None:
            shape = _adoptable(conn, schema)
            found = "empty" if shape is None else f"{shape}'s schema, not under migration"
        return found, head(schema)


_NUMBER = re.compile(r"_([0-9]+)$")


def _number(revision: str) -> int | None:
    """The schema number of a revision id (``service_0004`` -> 4), None when it has none."""
    m = _NUMBER.search(revision)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class Status:
    """Where one database stands against this release, for ``hedui db status``.

    ``state``: ``"current"`` (this release's revision), ``"empty"`` (the service makes its
    tables when it starts), ``"behind"`` (an earlier revision, or a schema from before
    migrations: ``hedui db upgrade``), ``"newer"`` (a revision of a later release), ``"unknown"``
    (a revision no release up to this one made) or ``"unreadable"`` (``found`` says why)."""

    schema: Schema
    state: str
    found: str
    needed: str

    @property
    def servable(self) -> bool:
        """Whether this release can serve the database as it is."""
        return self.state in ("current", "empty")

    def text(self, upgrade_command: str = "hedui db upgrade --config FILE") -> str:
        name, found, needed = self.schema.name, self.found, self.needed
        if self.state == "unreadable":  # ``found`` names the schema and says why
            if "cannot be read" not in found:
                return found
            return (
                f"{found}\ncheck the config's URL for it and that the server is reachable; a "
                "damaged database is restored from its backup"
            )
        if self.state == "newer":
            return (
                f"{name}: at {found}, written by a newer release of hedui (schema "
                f"{_number(found)}, this release knows up to {_number(needed)}): upgrade hedui, "
                "do not downgrade the database"
            )
        if self.state == "unknown":
            return (
                f"{name}: at {found}, a revision no release of hedui up to this one made: run "
                "the release that wrote it, or restore the database from a backup"
            )
        verdict = {
            "current": "up to date",
            "empty": "empty: the service makes its tables when it starts",
        }.get(self.state, f"behind: back it up, then run `{upgrade_command}`")
        return f"{name}: at {found}; this release needs {needed} ({verdict})"


def _sqlite_file(url: str) -> Path | None:
    """The file of an SQLite URL (None: another database, in memory, or not a URL)."""
    try:
        where = make_url(url)
    except ArgumentError:
        return None
    if where.get_backend_name() != "sqlite" or where.database in (None, "", ":memory:"):
        return None
    return Path(str(where.database))


def status(url: str, schema: Schema) -> Status:
    """Where the database at ``url`` stands against this release's revision of ``schema``;
    its schema is read, never changed."""
    needed = head(schema)
    path = _sqlite_file(url)
    if path is not None and not path.exists():  # asking makes no file (a mistyped path shows)
        nothing = f"empty ({path} does not exist yet; check the path if you expected one)"
        return Status(schema, "empty", nothing, needed)
    try:
        with _transaction(url, schema, "read") as conn:
            found = _current(conn, schema)
            shape = _adoptable(conn, schema) if found is None else None
    except SchemaError as e:
        return Status(schema, "unreadable", str(e), needed)
    if found is None:
        if shape is None:
            return Status(schema, "empty", "empty", needed)
        return Status(schema, "behind", f"{shape}'s schema, not under migration", needed)
    if found == needed:
        return Status(schema, "current", found, needed)
    if found in revisions(schema, None):
        return Status(schema, "behind", found, needed)
    n, m = _number(found), _number(needed)
    newer = n is not None and m is not None and n > m
    return Status(schema, "newer" if newer else "unknown", found, needed)

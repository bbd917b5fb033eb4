"""The audit log in a database through SQLAlchemy: SQLite (WAL) by default, or PostgreSQL.

Tables:
- ``log_entry``: the entries, by gapless leaf index;
- ``log_node``: the hash of every complete subtree (level, index), so a root or a proof takes
  O(log n) reads;
- ``log_state``: one counter row (the tree size). An append locks it (``SELECT … FOR UPDATE``
  on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite) and stores the entry, its nodes and the new size
  in the same transaction, so indexes are never skipped or reused;
- ``log_checkpoint``: every checkpoint the log signed.

The schema comes from Alembic migrations (``hedui.audit:migrations``). Triggers reject UPDATE
and DELETE on the entry, node, search and checkpoint tables (and TRUNCATE on PostgreSQL). They keep honest mistakes out; the guarantee against an insider is the hashes and
the checkpoints auditors keep outside the database.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    Integer,
    LargeBinary,
    String,
    cast,
    create_engine,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from hedui.audit import merkle
from hedui.audit.errors import AuditError
from hedui.audit.schema import AUDIT_SCHEMA
from hedui.core import migrations
from hedui.core.migrations import SchemaError

log = logging.getLogger("hedui.audit")


class StorageError(AuditError):
    """The log's database cannot be reached or used."""


class Base(DeclarativeBase):
    pass


class LogEntry(Base):
    __tablename__ = "log_entry"
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    entry: Mapped[bytes] = mapped_column(LargeBinary)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LogNode(Base):
    __tablename__ = "log_node"
    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LogState(Base):
    __tablename__ = "log_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)


CALLER_CHARS = 128  # a caller as indexed for search ("name" or "name/caseworker")


class LogSearch(Base):
    """What an auditor may search an entry by: applicant audit token, caller, time."""

    __tablename__ = "log_search"
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    applicant_token: Mapped[bytes | None] = mapped_column(LargeBinary(32), index=True)
    caller: Mapped[str] = mapped_column(String(CALLER_CHARS), index=True)
    time_ms: Mapped[int] = mapped_column(BigInteger, index=True)


@dataclass(frozen=True)
class SearchKeys:
    caller: str
    time_ms: int
    applicant_token: bytes | None = None


class LogCheckpoint(Base):
    __tablename__ = "log_checkpoint"
    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    note: Mapped[bytes] = mapped_column(LargeBinary)


_WRITE = "hedui_write"


def open_log_engine(url: str) -> Engine:
    """An engine for the log database, its schema at this release's revision (created in an
    empty database; see ``hedui.core.migrations``)."""
    try:
        engine = create_engine(url, pool_pre_ping=True, hide_parameters=True)
        if engine.dialect.name == "sqlite":

            @event.listens_for(engine, "connect")
            def _connect(dbapi_conn: object, _record: object) -> None:
                dbapi_conn.isolation_level = None  # type: ignore[attr-defined]
                cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()

            @event.listens_for(engine, "begin")
            def _begin(conn: Connection) -> None:
                # writers take the write lock at once; readers read a WAL snapshot without it
                write = conn.get_execution_options().get(_WRITE, False)
                conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        with engine.connect().execution_options(**{_WRITE: True}) as conn, conn.begin():
            migrations.ensure(conn, AUDIT_SCHEMA)
        return engine
    except SchemaError as e:
        raise StorageError(str(e)) from None
    except SQLAlchemyError as e:
        raise StorageError(
            f"the audit database is not available: {e.__class__.__name__}: {e}"
        ) from None


@dataclass(frozen=True)
class Appended:
    first_index: int
    size: int  # the tree size after the append


class LogStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # set by a refused write, cleared by a successful write probe (see probe_write)
        self.failed = False

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A connection for reading; driver errors become StorageError."""
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as e:
            raise StorageError(f"the audit database failed: {e.__class__.__name__}: {e}") from None

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction (SQLite: BEGIN IMMEDIATE); driver errors become StorageError."""
        try:
            with self.engine.connect().execution_options(**{_WRITE: True}) as conn, conn.begin():
                yield conn
        except SQLAlchemyError as e:
            self.failed = True
            raise StorageError(f"the audit database refused the write: {e}") from None

    def probe_write(self) -> bool:
        """Whether the log's database takes a write now: its state row changed and changed back
        in one transaction (a real write of its page; the entries' tables are append-only)."""
        try:
            with self._write() as conn:
                for step in (1, -1):
                    conn.execute(
                        update(LogState).where(LogState.id == 1).values(size=LogState.size + step)
                    )
        except StorageError as e:
            log.error("the audit database refuses writes: %s", str(e).splitlines()[0])
            return False
        self.failed = False
        return True

    def _lock_size(self, conn: Connection) -> int:
        stmt = select(LogState.size).where(LogState.id == 1)
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        size = conn.scalar(stmt)
        if size is None:
            raise StorageError("the log has no state row; the schema is damaged")
        return int(size)

    def append(self, entries: Sequence[tuple[bytes, SearchKeys]]) -> Appended:
        """Append entries in one transaction; they get consecutive, gapless indexes."""
        if not entries:
            raise ValueError("nothing to append")
        with self._write() as conn:
            size = self._lock_size(conn)
            last = conn.scalar(select(func.max(LogEntry.idx)))
            if (last is None and size) or (last is not None and last != size - 1):
                raise StorageError(
                    f"the log holds {size} entries but its last stored index is {last}: the "
                    "database was altered; run `hedui audit verify` and restore it before appending"
                )
            first = size
            entry_rows: list[dict[str, object]] = []
            search_rows: list[dict[str, object]] = []
            node_rows: list[dict[str, object]] = []
            fresh: dict[tuple[int, int], bytes] = {}  # nodes made in this batch
            for entry, keys in entries:
                h = merkle.leaf_hash(entry)
                entry_rows.append({"idx": size, "entry": entry, "leaf_hash": h})
                search_rows.append(
                    {
                        "idx": size,
                        "applicant_token": keys.applicant_token,
                        "caller": keys.caller,
                        "time_ms": keys.time_ms,
                    }
                )
                level, i = 0, size
                fresh[(0, size)] = h
                node_rows.append({"level": 0, "idx": size, "hash": h})
                while i & 1:  # a right child completes its parent
                    left = fresh.get((level, i - 1)) or self._node(conn, level, i - 1)
                    h = merkle.node_hash(left, h)
                    level, i = level + 1, i >> 1
                    fresh[(level, i)] = h
                    node_rows.append({"level": level, "idx": i, "hash": h})
                size += 1
            conn.execute(insert(LogEntry), entry_rows)
            conn.execute(insert(LogSearch), search_rows)
            conn.execute(insert(LogNode), node_rows)
            conn.execute(update(LogState).where(LogState.id == 1).values(size=size))
        return Appended(first, size)

    @staticmethod
    def _node(conn: Connection, level: int, idx: int) -> bytes:
        h = conn.scalar(select(LogNode.hash).where(LogNode.level == level, LogNode.idx == idx))
        if h is None:
            raise StorageError(f"missing tree node at level {level}, index {idx}")
        return bytes(h)

    def size(self) -> int:
        with self._read() as conn:
            return int(conn.scalar(select(LogState.size).where(LogState.id == 1)) or 0)

    def _subtree(self, conn: Connection) -> merkle.SubtreeHash:
        def subtree_hash(start: int, end: int) -> bytes:
            level = (end - start).bit_length() - 1
            return self._node(conn, level, start >> level)

        return subtree_hash

    def root(self, size: int) -> bytes:
        with self._read() as conn:
            return merkle.tree_root(size, self._subtree(conn))

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return self.inclusion_proofs([index], size)[0]

    def inclusion_proofs(self, indexes: Sequence[int], size: int) -> list[list[bytes]]:
        """Proofs of several leaves in one tree, sharing reads: a batch's proofs overlap."""
        with self._read() as conn:
            fetch = self._subtree(conn)
            memo: dict[tuple[int, int], bytes] = {}

            def subtree_hash(start: int, end: int) -> bytes:
                if (start, end) not in memo:
                    memo[(start, end)] = fetch(start, end)
                return memo[(start, end)]

            return [merkle.inclusion_proof(i, size, subtree_hash) for i in indexes]

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        with self._read() as conn:
            return merkle.consistency_proof(size1, size2, self._subtree(conn))

    def entries(self, start: int, end: int) -> list[tuple[int, bytes]]:
        with self._read() as conn:
            rows = conn.execute(
                select(LogEntry.idx, cast(LogEntry.entry, LargeBinary))
                .where(LogEntry.idx >= start, LogEntry.idx < end)
                .order_by(LogEntry.idx)
            )
            return [(int(i), bytes(e)) for i, e in rows]

    def search(
        self,
        *,
        applicant_token: bytes | None = None,
        caller: str | None = None,
        since_ms: int = 0,
        until_ms: int = 0,
        limit: int = 1000,
    ) -> list[tuple[int, bytes]]:
        stmt = select(LogEntry.idx, cast(LogEntry.entry, LargeBinary)).join(
            LogSearch, LogSearch.idx == LogEntry.idx
        )
        if applicant_token is not None:
            stmt = stmt.where(LogSearch.applicant_token == applicant_token)
        if caller is not None:  # the caller itself, or one of its caseworkers ("caller/…")
            stmt = stmt.where(
                or_(
                    LogSearch.caller == caller,
                    # not LIKE: SQLite's LIKE ignores case, and "/" may not be in a caseworker id
                    func.substr(LogSearch.caller, 1, len(caller) + 1) == f"{caller}/",
                )
            )
        if since_ms:
            stmt = stmt.where(LogSearch.time_ms >= since_ms)
        if until_ms:
            stmt = stmt.where(LogSearch.time_ms < until_ms)
        with self._read() as conn:
            rows = conn.execute(stmt.order_by(LogEntry.idx).limit(limit))
            return [(int(i), bytes(e)) for i, e in rows]

    def checkpoint_at(self, size: int) -> bytes | None:
        with self._read() as conn:
            note = conn.scalar(select(LogCheckpoint.note).where(LogCheckpoint.size == size))
        return None if note is None else bytes(note)

    def checkpoint_sizes(self) -> list[int]:
        with self._read() as conn:
            return [
                int(s)
                for s in conn.scalars(select(LogCheckpoint.size).order_by(LogCheckpoint.size))
            ]

    def save_checkpoint(self, size: int, note: bytes) -> None:
        try:
            with self._write() as conn:
                exists = conn.scalar(select(LogCheckpoint.size).where(LogCheckpoint.size == size))
                if exists is None:
                    conn.execute(insert(LogCheckpoint).values(size=size, note=note))
        except StorageError:
            if self.checkpoint_at(size) is None:  # not a concurrent save of the same size
                raise

    def latest_checkpoint(self) -> tuple[int, bytes] | None:
        with self._read() as conn:
            row = conn.execute(
                select(LogCheckpoint.size, LogCheckpoint.note)
                .order_by(LogCheckpoint.size.desc())
                .limit(1)
            ).first()
            return None if row is None else (int(row[0]), bytes(row[1]))

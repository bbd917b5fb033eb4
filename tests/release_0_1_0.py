"""The databases as release 0.1.0 (before migrations) created them, for the upgrade tests: its
models and triggers, copied from that release's ``audit/store.py`` and ``server/requests.py``."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    insert,
    text,
)

metadata = MetaData()
Table(
    "log_entry",
    metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("entry", LargeBinary, nullable=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
)
Table(
    "log_node",
    metadata,
    Column("level", Integer, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
)
log_state = Table(
    "log_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("size", BigInteger, nullable=False),
)
Table(
    "log_search",
    metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("applicant_token", LargeBinary(32), nullable=True, index=True),
    Column("caller", String(128), nullable=False, index=True),
    Column("time_ms", BigInteger, nullable=False, index=True),
)
Table(
    "log_checkpoint",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("note", LargeBinary, nullable=False),
)
Table(
    "verdict_record",
    metadata,
    Column("request_key", LargeBinary(32), primary_key=True),
    Column("application", LargeBinary(32), nullable=False),
    Column("verdict", LargeBinary, nullable=True),
    Column("claimed_at", Float, nullable=False),
    Column("query_id", String(128), nullable=True),
    Column("from_size", BigInteger, nullable=True),
    Column("pending", LargeBinary, nullable=True),
)
Table(
    "consent_case",
    metadata,
    Column("case_key", LargeBinary(32), primary_key=True),
    Column("household", LargeBinary(32), nullable=False),
)
LOG_TABLES = ("log_entry", "log_node", "log_checkpoint", "log_search")


def _triggers(dialect: str) -> list[str]:
    if dialect == "postgresql":
        out = [
            "CREATE OR REPLACE FUNCTION hedui_log_append_only() RETURNS trigger AS $$ "
            "BEGIN RAISE EXCEPTION 'the audit log is append-only: % on %', TG_OP, TG_TABLE_NAME; "
            "END; $$ LANGUAGE plpgsql"
        ]
        for table in LOG_TABLES:
            out.append(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION hedui_log_append_only()"
            )
            out.append(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION hedui_log_append_only()"
            )
        return out
    return [
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: {op} on {table}'); END"
        for table in LOG_TABLES
        for op in ("UPDATE", "DELETE")
    ]


def create(engine: Engine) -> None:
    """Both of release 0.1.0's schemas in one database, as its service created them."""
    with engine.begin() as conn:
        metadata.create_all(conn)
        conn.execute(insert(log_state).values(id=1, size=0))
        for ddl in _triggers(engine.dialect.name):
            conn.execute(text(ddl))

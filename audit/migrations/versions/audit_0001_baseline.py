"""The audit log as release 0.1.0 created it: entries, subtree hashes, the size, checkpoints,
the search index, and triggers that refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL).

Revision ID: audit_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "audit_0001"
down_revision = None
branch_labels = None
depends_on = None

TABLES = ("log_entry", "log_node", "log_checkpoint", "log_search")


def upgrade() -> None:
    op.create_table(
        "log_entry",
        sa.Column("idx", sa.BigInteger(), autoincrement=False, primary_key=True),
        sa.Column("entry", sa.LargeBinary(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
    )
    op.create_table(
        "log_node",
        sa.Column("level", sa.Integer(), autoincrement=False, primary_key=True),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, primary_key=True),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )
    state = op.create_table(
        "log_state",
        sa.Column("id", sa.Integer(), autoincrement=False, primary_key=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "log_search",
        sa.Column("idx", sa.BigInteger(), autoincrement=False, primary_key=True),
        sa.Column("applicant_token", sa.LargeBinary(32), nullable=True),
        sa.Column("caller", sa.String(128), nullable=False),
        sa.Column("time_ms", sa.BigInteger(), nullable=False),
    )
    for column in ("applicant_token", "caller", "time_ms"):
        op.create_index(f"ix_log_search_{column}", "log_search", [column])
    op.create_table(
        "log_checkpoint",
        sa.Column("size", sa.BigInteger(), autoincrement=False, primary_key=True),
        sa.Column("note", sa.LargeBinary(), nullable=False),
    )
    op.bulk_insert(state, [{"id": 1, "size": 0}])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE OR REPLACE FUNCTION hedui_log_append_only() RETURNS trigger AS $$ "
            "BEGIN RAISE EXCEPTION 'the audit log is append-only: % on %', TG_OP, TG_TABLE_NAME; "
            "END; $$ LANGUAGE plpgsql"
        )
        for table in TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION hedui_log_append_only()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION hedui_log_append_only()"
            )
    else:
        for table in TABLES:
            for verb in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} BEGIN "
                    f"SELECT RAISE(ABORT, 'the audit log is append-only: {verb} on {table}'); END"
                )


def downgrade() -> None:
    raise NotImplementedError("an audit log is never taken apart")

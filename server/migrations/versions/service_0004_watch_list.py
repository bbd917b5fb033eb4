"""主动发现, the monitored population (issue #13): the watch-list (tokens and the registry's
monitoring handle, never an ID number), whether a person's running total was over its
threshold (never the amount), the queue of matched events, and two alert columns (the
re-check's request id, the level whose overdue/escalation entry was logged).

Revision ID: service_0004
Revises: service_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "service_0004"
down_revision = "service_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "watch",
        sa.Column("watch_id", sa.String(32), primary_key=True),
        sa.Column("enrol_key", sa.LargeBinary(32), nullable=False, unique=True),
        sa.Column("pseudonym", sa.LargeBinary(32), nullable=False),
        sa.Column("program", sa.String(16), nullable=False),
        sa.Column("region", sa.String(32), nullable=False),
        sa.Column("district", sa.String(12), nullable=False),
        sa.Column("masked", sa.String(32), nullable=False),
        sa.Column("applicant_token", sa.LargeBinary(32), nullable=False),
        sa.Column("handle", sa.LargeBinary(256), nullable=False),
        sa.Column("consent", sa.LargeBinary(512), nullable=False),
        sa.Column("until", sa.String(10), nullable=False),
        sa.Column("enrolled_on", sa.String(10), nullable=False),
        sa.Column("enrolled_by", sa.String(128), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("benefit_fen", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("pseudonym", "program", name="uq_watch_household"),
    )
    op.create_table(
        "watch_token",
        sa.Column("connector_id", sa.String(64), primary_key=True),
        sa.Column("token", sa.LargeBinary(32), primary_key=True),
        sa.Column("watch_id", sa.String(32), primary_key=True),
    )
    op.create_table(
        "event_level",
        sa.Column("watch_id", sa.String(32), primary_key=True),
        sa.Column("connector_id", sa.String(64), primary_key=True),
        sa.Column("token", sa.LargeBinary(32), primary_key=True),
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("over", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "monitor_event",
        sa.Column("event_id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("watch_id", sa.String(32), nullable=False),
        sa.Column("connector_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("occurred_on", sa.String(10), nullable=False),
        sa.Column("received_ms", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("taken_by", sa.String(64), nullable=True),
        sa.Column("taken_ms", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.String(32), nullable=True),
        sa.Column("note", sa.String(200), nullable=True),
    )
    op.create_index("ix_monitor_event_watch_id", "monitor_event", ["watch_id"])
    op.create_index("ix_monitor_event_state", "monitor_event", ["state"])
    with op.batch_alter_table("alert") as batch:
        batch.add_column(
            sa.Column("recheck_request_id", sa.String(64), nullable=False, server_default="")
        )
        batch.add_column(
            sa.Column("level_logged", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("alert") as batch:
        batch.drop_column("level_logged")
        batch.drop_column("recheck_request_id")
    for table in ("monitor_event", "event_level", "watch_token", "watch"):
        op.drop_table(table)

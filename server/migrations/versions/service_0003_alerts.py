"""主动发现 alerts (issue #13): one row per alert, for its district, with its deadline and the
follow-up (accepted, closed with an outcome). No ID number and no source's figure.

Revision ID: service_0003
Revises: service_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "service_0003"
down_revision = "service_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert",
        sa.Column("alert_id", sa.String(32), primary_key=True),
        sa.Column("watch_id", sa.String(32), nullable=False),
        sa.Column("district", sa.String(12), nullable=False),
        sa.Column("masked", sa.String(32), nullable=False),
        sa.Column("program", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("event_on", sa.String(10), nullable=False),
        sa.Column("raised_on", sa.String(10), nullable=False),
        sa.Column("due_on", sa.String(10), nullable=False),
        sa.Column("escalate_on", sa.String(10), nullable=False),
        sa.Column("decision_before", sa.String(16), nullable=False),
        sa.Column("decision_after", sa.String(16), nullable=False),
        sa.Column("benefit_fen", sa.BigInteger(), nullable=False),
        sa.Column("suggest", sa.String(16), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("accepted_by", sa.String(128), nullable=True),
        sa.Column("closed_by", sa.String(128), nullable=True),
        sa.Column("closed_on", sa.String(10), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("note", sa.String(500), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    for column in ("watch_id", "district", "raised_on", "state"):
        op.create_index(f"ix_alert_{column}", "alert", [column])


def downgrade() -> None:
    op.drop_table("alert")

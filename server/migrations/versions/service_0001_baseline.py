"""The service's state as release 0.1.0 created it: verdict records by keyed request id, and
consent cases by keyed case number.

Revision ID: service_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "service_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "verdict_record",
        sa.Column("request_key", sa.LargeBinary(32), primary_key=True),
        sa.Column("application", sa.LargeBinary(32), nullable=False),
        sa.Column("verdict", sa.LargeBinary(), nullable=True),
        sa.Column("claimed_at", sa.Float(), nullable=False),
        sa.Column("query_id", sa.String(128), nullable=True),
        sa.Column("from_size", sa.BigInteger(), nullable=True),
        sa.Column("pending", sa.LargeBinary(), nullable=True),
    )
    op.create_table(
        "consent_case",
        sa.Column("case_key", sa.LargeBinary(32), primary_key=True),
        sa.Column("household", sa.LargeBinary(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("consent_case")
    op.drop_table("verdict_record")

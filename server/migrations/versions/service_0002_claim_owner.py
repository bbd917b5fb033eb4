"""Each claim names the service process (replica) that holds it, so replicas on one database
settle only the claims of a process that is gone. Claims of release 0.1.0 have no owner and are
settled by the first replica that starts.

Revision ID: service_0002
Revises: service_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "service_0002"
down_revision = "service_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("verdict_record", sa.Column("owner", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("verdict_record") as batch:
        batch.drop_column("owner")

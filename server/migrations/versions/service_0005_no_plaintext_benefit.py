"""No benefit in plaintext at rest (issue #24 item 4): the benefit gives a household's income to
a yuan. The watch-list's ``benefit_fen`` is dropped (nothing compares it: a re-check is compared
by its decision). The alert's, shown to the caseworker, is kept sealed in ``benefit_sealed``.

A migration has no key (``hedui db upgrade`` reads none), so an existing alert's benefit is
moved into ``benefit_sealed`` marked unsealed (``\\x00`` + 8 bytes, big-endian) and the plaintext
column is dropped; the service seals the marked ones when it starts (``AlertBook.seal_legacy``),
and refuses any unsealed benefit after that.

Revision ID: service_0005
Revises: service_0004
"""

import sqlalchemy as sa
from alembic import op

revision = "service_0005"
down_revision = "service_0004"
branch_labels = None
depends_on = None

LEGACY = b"\x00"  # as hedui.server.alerts.LEGACY


def upgrade() -> None:
    with op.batch_alter_table("watch") as batch:
        batch.drop_column("benefit_fen")
    op.add_column("alert", sa.Column("benefit_sealed", sa.LargeBinary(64), nullable=True))
    alert = sa.table(
        "alert",
        sa.column("alert_id", sa.String(32)),
        sa.column("benefit_fen", sa.BigInteger()),
        sa.column("benefit_sealed", sa.LargeBinary(64)),
    )
    conn = op.get_bind()
    for alert_id, fen in conn.execute(sa.select(alert.c.alert_id, alert.c.benefit_fen)).all():
        conn.execute(
            sa.update(alert)
            .where(alert.c.alert_id == alert_id)
            .values(benefit_sealed=LEGACY + int(fen).to_bytes(8, "big", signed=True))
        )
    with op.batch_alter_table("alert") as batch:
        batch.drop_column("benefit_fen")
        batch.alter_column("benefit_sealed", existing_type=sa.LargeBinary(64), nullable=False)


def downgrade() -> None:
    """The benefits still marked unsealed come back; a sealed one cannot be opened without the
    service's key and comes back as 0, and the watch-list's as 0."""
    alert = sa.table(
        "alert",
        sa.column("alert_id", sa.String(32)),
        sa.column("benefit_fen", sa.BigInteger()),
        sa.column("benefit_sealed", sa.LargeBinary(64)),
    )
    op.add_column(
        "alert", sa.Column("benefit_fen", sa.BigInteger(), nullable=False, server_default="0")
    )
    conn = op.get_bind()
    for alert_id, stored in conn.execute(sa.select(alert.c.alert_id, alert.c.benefit_sealed)).all():
        stored = bytes(stored)
        if stored.startswith(LEGACY) and len(stored) == len(LEGACY) + 8:
            fen = int.from_bytes(stored[len(LEGACY) :], "big", signed=True)
            conn.execute(
                sa.update(alert).where(alert.c.alert_id == alert_id).values(benefit_fen=fen)
            )
    with op.batch_alter_table("alert") as batch:
        batch.drop_column("benefit_sealed")
    op.add_column(
        "watch", sa.Column("benefit_fen", sa.BigInteger(), nullable=False, server_default="0")
    )

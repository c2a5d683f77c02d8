"""event lock partition: drains take disjoint shares of a backlog

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21 10:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable and not backfilled: events logged before this take the unpartitioned claim path.
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lock_partition", sa.SmallInteger(), nullable=True))
        batch_op.create_index(
            "ix_stripe_events_status_partition_received",
            ["status", "lock_partition", "received_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.drop_index("ix_stripe_events_status_partition_received")
        batch_op.drop_column("lock_partition")

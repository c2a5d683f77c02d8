"""event retries left: the one retry policy keeps an event's remaining retries in the log

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 22:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, not backfilled: NULL is a fresh episode (the whole schedule), what older rows get.
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retries_left", sa.SmallInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.drop_column("retries_left")

"""customer balance observed: when the mirrored balance was Stripe's

A customer's balance now follows the newest observation of it: a customer snapshot, or an
invoice that applied credit at finalization (its `ending_balance`). This column orders them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 23:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, not backfilled: NULL means "no observation ordered yet"; any new one replaces it.
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("balance_observed_key", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_column("balance_observed_key")

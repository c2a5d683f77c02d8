"""customers.credit_map_complete: the newest customer snapshot listed every currency's credit

Stripe includes a customer's `invoice_credit_balance` only when a request expands it (backfill,
reconcile); that map lists every currency the customer has a balance in, so a currency it leaves
out holds none. The flag keeps that fact for credit in a currency the mirror learns of only later
(an older credit note arriving after the snapshot), so the result does not depend on the order.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 13:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # False for every existing row: no snapshot recorded so far carried the map as a complete list.
    # A plain ADD COLUMN (SQLite has it, with a default): a batch copy of `customers` would trip
    # the foreign keys that point at it.
    op.add_column(
        "customers", sa.Column("credit_map_complete", sa.Boolean(), nullable=False, server_default=sa.false())
    )


def downgrade() -> None:
    op.drop_column("customers", "credit_map_complete")

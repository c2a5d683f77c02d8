"""invoice_payments.account: invoice payments are told apart by Connect account like every other row

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 04:40:00

SPEC.md asks for `livemode` and `account` on every mirrored row; 0012 gave them to every table but
`invoice_payments` (added in 0011), which had only `livemode`, taken from the payment object, where
an invoice's `payments.data` leaves it out. Existing rows take their invoice's scope; a payment
whose invoice is not mirrored takes the newest logged event about it (`stripe_events.object_id`);
one with neither keeps its livemode and is the platform's own (account null), as in 0012.
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("invoice_payments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("account", sa.String(length=255), nullable=True))
    op.execute(
        "UPDATE invoice_payments SET"
        " account = (SELECT i.account FROM invoices i WHERE i.id = invoice_payments.invoice_id),"
        " livemode = (SELECT i.livemode FROM invoices i WHERE i.id = invoice_payments.invoice_id)"
        " WHERE EXISTS (SELECT 1 FROM invoices i WHERE i.id = invoice_payments.invoice_id)"
    )
    newest = (
        "FROM stripe_events e WHERE e.object_id = invoice_payments.id ORDER BY e.received_at DESC LIMIT 1"
    )
    op.execute(
        f"UPDATE invoice_payments SET account = (SELECT e.account {newest}),"
        f" livemode = (SELECT e.livemode {newest})"
        " WHERE NOT EXISTS (SELECT 1 FROM invoices i WHERE i.id = invoice_payments.invoice_id)"
        " AND EXISTS (SELECT 1 FROM stripe_events e WHERE e.object_id = invoice_payments.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("invoice_payments", schema=None) as batch_op:
        batch_op.drop_column("account")

"""invoice payments: partial payments toward an invoice (invoice_payment.paid, basil and later)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 22:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "invoice_payments",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("invoice_id", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("amount_paid", sa.BigInteger(), nullable=True),
        sa.Column("amount_requested", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("version_key", sa.String(length=300), nullable=False),
        sa.Column("source_event_id", sa.String(length=255), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_payments")),
    )
    with op.batch_alter_table("invoice_payments", schema=None) as batch_op:
        batch_op.create_index("ix_invoice_payments_invoice_id", ["invoice_id"], unique=False)
    # A constant default: adding the column rewrites nothing on PostgreSQL 11+.
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("payments_amount_paid", sa.BigInteger(), nullable=False, server_default=sa.text("0"))
        )


def downgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_column("payments_amount_paid")
    with op.batch_alter_table("invoice_payments", schema=None) as batch_op:
        batch_op.drop_index("ix_invoice_payments_invoice_id")
    op.drop_table("invoice_payments")

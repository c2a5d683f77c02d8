"""credit: credit notes, ledger, customer balances and entities

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 08:21:07.108117
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


# Existing rows get server defaults so the NOT NULL columns can be added to live tables.


def upgrade() -> None:
    op.create_table(
        "credit_ledger",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("source_type", sa.String(length=16), nullable=False),
        sa.Column("source_id", sa.String(length=255), nullable=False),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_credit_ledger_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_ledger")),
        sa.UniqueConstraint(
            "customer_id",
            "kind",
            "source_type",
            "source_id",
            name=op.f("uq_credit_ledger_customer_id_kind_source_type_source_id"),
        ),
    )
    op.create_table(
        "credit_notes",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("invoice_id", sa.String(length=255), nullable=True),
        sa.Column("customer_id", sa.String(length=255), nullable=True),
        sa.Column("number", sa.String(length=255), nullable=True),
        sa.Column("type", sa.String(length=16), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("subtotal", sa.BigInteger(), nullable=True),
        sa.Column("total", sa.BigInteger(), nullable=True),
        sa.Column("pre_payment_amount", sa.BigInteger(), nullable=False),
        sa.Column("post_payment_amount", sa.BigInteger(), nullable=False),
        sa.Column("out_of_band_amount", sa.BigInteger(), nullable=False),
        sa.Column("refunded_amount", sa.BigInteger(), nullable=False),
        sa.Column("refund_ids", sa.Text(), nullable=True),
        sa.Column("credited_to_balance", sa.BigInteger(), nullable=False),
        sa.Column("customer_balance_transaction", sa.String(length=255), nullable=True),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("memo", sa.Text(), nullable=True),
        sa.Column("pdf", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("voided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("version_key", sa.String(length=300), nullable=False),
        sa.Column("source_event_id", sa.String(length=255), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_credit_notes_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_notes")),
    )
    with op.batch_alter_table("credit_notes", schema=None) as batch_op:
        batch_op.create_index("ix_credit_notes_customer_created", ["customer_id", "created_at"], unique=False)
        batch_op.create_index("ix_credit_notes_invoice_id", ["invoice_id"], unique=False)

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("balance", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("credit_balance", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column("entity_type", sa.String(length=32), nullable=False, server_default="organization")
        )
        batch_op.add_column(sa.Column("entity_id", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_customers_entity_id", ["entity_id"], unique=False)

    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("pre_payment_credit_notes_amount", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("post_payment_credit_notes_amount", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("amount_overpaid", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column("credited_in_full", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_column("credited_in_full")
        batch_op.drop_column("amount_overpaid")
        batch_op.drop_column("post_payment_credit_notes_amount")
        batch_op.drop_column("pre_payment_credit_notes_amount")

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_index("ix_customers_entity_id")
        batch_op.drop_column("deleted_at")
        batch_op.drop_column("entity_id")
        batch_op.drop_column("entity_type")
        batch_op.drop_column("credit_balance")
        batch_op.drop_column("balance")

    with op.batch_alter_table("credit_notes", schema=None) as batch_op:
        batch_op.drop_index("ix_credit_notes_invoice_id")
        batch_op.drop_index("ix_credit_notes_customer_created")

    op.drop_table("credit_notes")
    op.drop_table("credit_ledger")

"""read API indexes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 08:33:37.235594
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.create_index("ix_invoices_created", ["created_at", "id"], unique=False)
        batch_op.create_index("ix_invoices_customer_created", ["customer_id", "created_at"], unique=False)
        batch_op.create_index(
            "ix_invoices_number_prefix",
            ["number"],
            unique=False,
            postgresql_ops={"number": "varchar_pattern_ops"},
        )

    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index("ix_notifications_created", ["created_at"], unique=False)

    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.create_index("ix_stripe_events_received", ["received_at"], unique=False)
        batch_op.create_index("ix_stripe_events_type_received", ["type", "received_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.drop_index("ix_stripe_events_type_received")
        batch_op.drop_index("ix_stripe_events_received")

    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_created")

    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_index("ix_invoices_number_prefix", postgresql_ops={"number": "varchar_pattern_ops"})
        batch_op.drop_index("ix_invoices_customer_created")
        batch_op.drop_index("ix_invoices_created")

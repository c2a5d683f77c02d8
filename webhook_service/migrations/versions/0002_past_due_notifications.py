"""past due: notifications, preferences; sweep-made history rows have no event

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 08:11:48.287156
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notification_preferences",
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("past_due", sa.Boolean(), nullable=False),
        sa.Column("channels", sa.String(length=255), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_notification_preferences")),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("audience", sa.String(length=16), nullable=False),
        sa.Column("invoice_id", sa.String(length=255), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=True),
        sa.Column("amount_remaining", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("due_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("days_past_due", sa.Integer(), nullable=True),
        sa.Column("channels", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_notifications_invoice_id_invoices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sa.UniqueConstraint(
            "invoice_id", "kind", "audience", name=op.f("uq_notifications_invoice_id_kind_audience")
        ),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index("ix_notifications_audience_created", ["audience", "created_at"], unique=False)
        batch_op.create_index(
            "ix_notifications_customer_created", ["customer_id", "created_at"], unique=False
        )

    with op.batch_alter_table("invoice_status_history", schema=None) as batch_op:
        batch_op.alter_column("event_id", existing_type=sa.VARCHAR(length=255), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("invoice_status_history", schema=None) as batch_op:
        batch_op.alter_column("event_id", existing_type=sa.VARCHAR(length=255), nullable=False)

    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_customer_created")
        batch_op.drop_index("ix_notifications_audience_created")

    op.drop_table("notifications")
    op.drop_table("notification_preferences")

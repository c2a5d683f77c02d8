"""invoice lines_complete: says whether the mirrored lines are the invoice's whole list

Replaces `lines_truncated` (its negation) so the portal reads the positive fact it needs; a
partial index keeps the count behind the `stripe_webhook_invoices_lines_incomplete` gauge cheap.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 22:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("lines_complete", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    op.execute(sa.text("UPDATE invoices SET lines_complete = NOT lines_truncated"))
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_column("lines_truncated")
    op.create_index(
        "ix_invoices_lines_incomplete",
        "invoices",
        ["id"],
        postgresql_where=sa.text("NOT lines_complete"),
        sqlite_where=sa.text("NOT lines_complete"),
    )


def downgrade() -> None:
    op.drop_index("ix_invoices_lines_incomplete", table_name="invoices")
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("lines_truncated", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.execute(sa.text("UPDATE invoices SET lines_truncated = NOT lines_complete"))
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_column("lines_complete")

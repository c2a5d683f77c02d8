"""operator tools: audit trail, pause switch, failure tracebacks, retention tombstones

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 22:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "operator_actions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_actions")),
    )
    with op.batch_alter_table("operator_actions", schema=None) as batch_op:
        batch_op.create_index("ix_operator_actions_at", ["at"], unique=False)
        batch_op.create_index("ix_operator_actions_action_at", ["action", "at"], unique=False)
    op.create_table(
        "service_flags",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("set_by", sa.String(length=255), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_service_flags")),
    )
    # Both nullable, no default: adding them rewrites nothing, even on a large event log.
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_traceback", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("payload_pruned_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("invoice_status_history", schema=None) as batch_op:
        batch_op.create_index("ix_invoice_status_history_event_id", ["event_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("invoice_status_history", schema=None) as batch_op:
        batch_op.drop_index("ix_invoice_status_history_event_id")
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.drop_column("payload_pruned_at")
        batch_op.drop_column("last_traceback")
    op.drop_table("service_flags")
    with op.batch_alter_table("operator_actions", schema=None) as batch_op:
        batch_op.drop_index("ix_operator_actions_action_at")
        batch_op.drop_index("ix_operator_actions_at")
    op.drop_table("operator_actions")

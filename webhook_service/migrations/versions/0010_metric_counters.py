"""metric counters, rejected deliveries per minute, process heartbeats, retry-due index

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 22:00:00

The counters start from what the event log holds at upgrade time (one pass over it, here and
never again), so `*_total` series continue from the figures the old scrape-time counts showed.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metric_counters",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", "label", "shard", name=op.f("pk_metric_counters")),
    )
    op.create_table(
        "delivery_rejections",
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("minute", "reason", name=op.f("pk_delivery_rejections")),
    )
    op.create_table(
        "process_heartbeats",
        sa.Column("process", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("process", "role", name=op.f("pk_process_heartbeats")),
    )
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_stripe_events_retry_due",
            ["next_attempt_at"],
            unique=False,
            postgresql_where=sa.text("next_attempt_at IS NOT NULL"),
            sqlite_where=sa.text("next_attempt_at IS NOT NULL"),
        )
    # Start from the log: received (every logged event), ignored, processed, failed, by type.
    op.execute(
        """
        WITH logged AS (SELECT type, status, COUNT(*) AS n FROM stripe_events GROUP BY type, status)
        INSERT INTO metric_counters (name, label, shard, value)
        SELECT 'received', type, 0, SUM(n) FROM logged GROUP BY type
        UNION ALL
        SELECT status, type, 0, n FROM logged WHERE status IN ('ignored', 'processed', 'failed')
        """
    )


def downgrade() -> None:
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.drop_index("ix_stripe_events_retry_due")
    op.drop_table("process_heartbeats")
    op.drop_table("delivery_rejections")
    op.drop_table("metric_counters")

"""backfill_cursors, reconcile_runs and credit_ledger.at_most

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 05:45:00

`webhook-service backfill` pages through Stripe's list endpoints for years of history; its cursor
per list, Connect account and mode (test or live key) lets a killed run resume where it stopped.
`webhook-service reconcile` records each run's drift per field, which /metrics reports. A ledger
row whose amount a pre-basil credit note leaves out (it refunds and credits the balance without
saying how much of each) keeps its upper bound in `at_most`; the column is nullable, so adding
it rewrites nothing.
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backfill_cursors",
        sa.Column("resource", sa.String(length=32), nullable=False),
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("run_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("starting_after", sa.String(length=255), nullable=True),
        sa.Column("starting_after_created", sa.BigInteger(), nullable=True),
        sa.Column("listed", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("resource", "account", "livemode", name=op.f("pk_backfill_cursors")),
    )
    op.create_table(
        "reconcile_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("checked", sa.Integer(), nullable=False),
        sa.Column("drift", sa.JSON(), nullable=False),
        sa.Column("repaired", sa.Integer(), nullable=False),
        sa.Column("scope", sa.JSON(), nullable=False),
        sa.Column("whole", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconcile_runs")),
    )
    op.create_index("ix_reconcile_runs_started_at", "reconcile_runs", ["started_at"], unique=False)
    with op.batch_alter_table("credit_ledger", schema=None) as batch_op:
        batch_op.add_column(sa.Column("at_most", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("credit_ledger", schema=None) as batch_op:
        batch_op.drop_column("at_most")
    op.drop_index("ix_reconcile_runs_started_at", table_name="reconcile_runs")
    op.drop_table("reconcile_runs")
    op.drop_table("backfill_cursors")

"""customers.entity_id as wide as a Stripe metadata value (500 characters, was 255)

The portal's id comes from customer metadata, whose values Stripe allows up to 500 characters;
at 255 a valid customer failed its event. PostgreSQL widens a varchar in place (no rewrite);
SQLite copies the table (a batch migration), which `db.upgrade` runs with foreign keys off, as
SQLite's own procedure for altering a table says, so the copy cascades nothing into child rows.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 21:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.alter_column(
            "entity_id",
            existing_type=sa.String(length=255),
            type_=sa.String(length=500),
            existing_nullable=True,
        )


def downgrade() -> None:
    # Fails on PostgreSQL while a customer holds a longer id: nothing is cut silently.
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.alter_column(
            "entity_id",
            existing_type=sa.String(length=500),
            type_=sa.String(length=255),
            existing_nullable=True,
        )

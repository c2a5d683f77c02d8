"""modes, accounts, currencies: livemode and account on every mirrored row; credit per currency

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 22:00:00

Existing rows are filled from the event log: an object takes the `livemode` and `account` of the
newest logged event about it (`stripe_events.object_id`); lines, notifications and ledger rows
take their invoice's or customer's. Rows whose events were pruned keep their livemode and get
account null (the platform's own), which is what a service without Connect had.

Credit balances are rebuilt per currency from what the rows already hold (the customer's
`balance` in its `currency`, every other currency the sum of its explained ledger rows), and
the adjustment rows, which used to mix currencies, are recomputed per currency.
"""

from collections import defaultdict
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

#: Tables that gain both columns, and the ones that only gain `account` (they had livemode).
_BOTH = ("invoice_lines", "credit_ledger", "notifications")
_ACCOUNT_ONLY = ("customers", "invoices", "credit_notes")
_OLD_LEDGER_KEY = "uq_credit_ledger_customer_id_kind_source_type_source_id"
_NEW_LEDGER_KEY = "uq_credit_ledger_source_currency"
#: Case-insensitive prefix search of the customer list (PostgreSQL; SQLite scans a small table).
#: Named in core/models.py's EXPRESSION_INDEXES too.
_PREFIX_INDEXES = {"ix_customers_name_prefix": "name", "ix_customers_email_prefix": "email"}


def upgrade() -> None:
    for table in _ACCOUNT_ONLY + _BOTH:
        with op.batch_alter_table(table, schema=None) as batch_op:
            if table in _BOTH:
                batch_op.add_column(
                    sa.Column("livemode", sa.Boolean(), nullable=False, server_default=sa.false())
                )
            batch_op.add_column(sa.Column("account", sa.String(length=255), nullable=True))

    op.create_table(
        "customer_balances",
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("credit_balance", sa.BigInteger(), nullable=False),
        sa.Column("reported", sa.BigInteger(), nullable=True),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("account", sa.String(length=255), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_customer_balances_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("customer_id", "currency", name=op.f("pk_customer_balances")),
    )

    with op.batch_alter_table("credit_ledger", schema=None) as batch_op:
        batch_op.drop_constraint(_OLD_LEDGER_KEY, type_="unique")
        batch_op.create_unique_constraint(
            _NEW_LEDGER_KEY, ["customer_id", "kind", "source_type", "source_id", "currency"]
        )
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.create_index("ix_invoices_account_created", ["account", "livemode", "created_at"])
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index("ix_notifications_account_created", ["account", "livemode", "created_at"])
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.create_index("ix_customers_created", ["created_at", "id"])
        batch_op.create_index("ix_customers_account_created", ["account", "livemode", "created_at"])
    if op.get_bind().dialect.name == "postgresql":
        for name, column in _PREFIX_INDEXES.items():
            op.execute(f"CREATE INDEX {name} ON customers (lower({column}) varchar_pattern_ops)")

    _fill_scopes()
    _rebuild_balances()


def _fill_scopes() -> None:
    """Each object's livemode and account from its newest logged event; children from their parent."""
    for table in ("invoices", "credit_notes", "customers"):
        newest = f"FROM stripe_events e WHERE e.object_id = {table}.id ORDER BY e.received_at DESC LIMIT 1"
        op.execute(
            f"UPDATE {table} SET account = (SELECT e.account {newest}),"
            f" livemode = (SELECT e.livemode {newest})"
            f" WHERE EXISTS (SELECT 1 FROM stripe_events e WHERE e.object_id = {table}.id)"
        )
    # A customer known only from its invoices (or credit notes) belongs where they do.
    for source in ("invoices", "credit_notes"):
        op.execute(
            "UPDATE customers SET"
            f" account = (SELECT s.account FROM {source} s WHERE s.customer_id = customers.id LIMIT 1),"
            f" livemode = (SELECT s.livemode FROM {source} s WHERE s.customer_id = customers.id LIMIT 1)"
            " WHERE NOT EXISTS (SELECT 1 FROM stripe_events e WHERE e.object_id = customers.id)"
            f" AND EXISTS (SELECT 1 FROM {source} s WHERE s.customer_id = customers.id)"
        )
    for table, parent, key in (
        ("invoice_lines", "invoices", "invoice_id"),
        ("notifications", "invoices", "invoice_id"),
        ("credit_ledger", "customers", "customer_id"),
    ):
        op.execute(
            f"UPDATE {table} SET"
            f" account = (SELECT p.account FROM {parent} p WHERE p.id = {table}.{key}),"
            f" livemode = (SELECT p.livemode FROM {parent} p WHERE p.id = {table}.{key})"
            f" WHERE EXISTS (SELECT 1 FROM {parent} p WHERE p.id = {table}.{key})"
        )


def _rebuild_balances() -> None:
    """customer_balances per currency, and one adjustment row per currency that needs one."""
    conn = op.get_bind()
    conn.execute(
        sa.text(
            "UPDATE credit_ledger SET currency = (SELECT c.currency FROM customers c"
            " WHERE c.id = credit_ledger.customer_id) WHERE currency IS NULL"
        )
    )
    conn.execute(sa.text("DELETE FROM credit_ledger WHERE kind = 'adjustment'"))
    explained: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for customer_id, currency, amount in conn.execute(
        sa.text(
            "SELECT customer_id, currency, SUM(amount) FROM credit_ledger"
            " WHERE currency IS NOT NULL GROUP BY customer_id, currency"
        )
    ):
        explained[customer_id][currency] = int(amount)
    now = datetime.now(UTC)
    balances, adjustments, own_credit = [], [], []
    customers = conn.execute(sa.text("SELECT id, currency, balance, livemode, account FROM customers"))
    for customer_id, own, balance, livemode, account in customers:
        per_currency = dict(explained.get(customer_id, {}))
        scope = {"customer_id": customer_id, "livemode": bool(livemode), "account": account}
        for currency in sorted(set(per_currency) | ({own} if own and balance is not None else set())):
            sum_explained = per_currency.get(currency, 0)
            reported = -balance if currency == own and balance is not None else None
            credit = sum_explained if reported is None else reported
            balances.append(
                {**scope, "currency": currency, "credit_balance": credit, "reported": reported,
                 "updated_at": now}
            )  # fmt: skip
            if reported is not None and reported != sum_explained:
                adjustments.append(
                    {**scope, "kind": "adjustment", "amount": reported - sum_explained, "currency": currency,
                     "source_type": "customer", "source_id": customer_id, "updated_at": now}
                )  # fmt: skip
        if own in per_currency or (own and balance is not None):
            credit = -balance if balance is not None else per_currency.get(own, 0)
            own_credit.append({"cid": customer_id, "credit": credit})
    metadata = sa.MetaData()
    balance_table = sa.Table("customer_balances", metadata, autoload_with=conn)
    ledger_table = sa.Table("credit_ledger", metadata, autoload_with=conn)
    if balances:
        conn.execute(balance_table.insert(), balances)
    if adjustments:
        conn.execute(ledger_table.insert(), adjustments)
    if own_credit:
        conn.execute(sa.text("UPDATE customers SET credit_balance = :credit WHERE id = :cid"), own_credit)


def downgrade() -> None:
    # One adjustment per customer again (in its own currency); other currencies' adjustments go.
    op.execute(
        "DELETE FROM credit_ledger WHERE kind = 'adjustment' AND currency IS NOT"
        " (SELECT c.currency FROM customers c WHERE c.id = credit_ledger.customer_id)"
        if op.get_bind().dialect.name == "sqlite"
        else "DELETE FROM credit_ledger WHERE kind = 'adjustment' AND currency IS DISTINCT FROM"
        " (SELECT c.currency FROM customers c WHERE c.id = credit_ledger.customer_id)"
    )
    if op.get_bind().dialect.name == "postgresql":
        for name in _PREFIX_INDEXES:
            op.execute(f"DROP INDEX {name}")
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_index("ix_customers_account_created")
        batch_op.drop_index("ix_customers_created")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_account_created")
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_index("ix_invoices_account_created")
    with op.batch_alter_table("credit_ledger", schema=None) as batch_op:
        batch_op.drop_constraint(_NEW_LEDGER_KEY, type_="unique")
        batch_op.create_unique_constraint(
            _OLD_LEDGER_KEY, ["customer_id", "kind", "source_type", "source_id"]
        )
    op.drop_table("customer_balances")
    for table in _ACCOUNT_ONLY + _BOTH:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("account")
            if table in _BOTH:
                batch_op.drop_column("livemode")

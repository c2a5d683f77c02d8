"""Migration 0016 on a database with data: `customers.entity_id` widened to a metadata value's
500 characters. On SQLite the table is copied; what points at a customer (invoices, the credit
ledger and balances, which cascade on delete) must come through the copy untouched."""

import sqlalchemy as sa

from tests.test_migration_0012 import NOW, _insert, empty_url  # noqa: F401 (fixture)
from webhook_service.processing.db import upgrade

INVOICE = {"status": "open", "credit_applied": 0, "attempt_count": 0, "lines_complete": True,
           "pre_payment_credit_notes_amount": 0, "post_payment_credit_notes_amount": 0,
           "amount_overpaid": 0, "credited_in_full": False, "version_key": "1",
           "updated_at": NOW}  # fmt: skip


def _rows(conn, table: str) -> int:
    return conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one()


def test_upgrade_widens_entity_id_and_keeps_every_row_that_points_at_a_customer(empty_url):  # noqa: F811
    upgrade(empty_url, "0015")
    engine = sa.create_engine(empty_url)
    with engine.begin() as conn:
        _insert(conn, "customers", id="cus_1", currency="usd", livemode=False, balance=-500,
                credit_balance=500, entity_type="company", entity_id="org_1", version_key="1",
                created_at=NOW, updated_at=NOW, credit_map_complete=False)  # fmt: skip
        _insert(conn, "invoices", id="in_1", customer_id="cus_1", livemode=False, **INVOICE)
        _insert(conn, "credit_ledger", customer_id="cus_1", kind="credit_note", amount=500, currency="usd",
                source_type="credit_note", source_id="cn_1", updated_at=NOW)  # fmt: skip
        _insert(conn, "customer_balances", customer_id="cus_1", currency="usd", credit_balance=500,
                livemode=False, updated_at=NOW)  # fmt: skip
    upgrade(empty_url)
    with engine.begin() as conn:
        assert [_rows(conn, t) for t in ("customers", "invoices", "credit_ledger", "customer_balances")] == [
            1
        ] * 4
        assert conn.execute(sa.text("SELECT entity_type, entity_id FROM customers")).one() == (
            "company",
            "org_1",
        )
        conn.execute(sa.text("UPDATE customers SET entity_id = :v"), {"v": "e" * 500})
        if engine.dialect.name == "postgresql":  # SQLite does not enforce a varchar's width
            (column,) = [c for c in sa.inspect(conn).get_columns("customers") if c["name"] == "entity_id"]
            assert column["type"].length == 500
    engine.dispose()

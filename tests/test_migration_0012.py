"""Migration 0012 on a database with data: scopes filled from the event log, credit split by currency."""

import os
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
import sqlalchemy as sa

from tests.conftest import PG_ADMIN_URL
from webhook_service.processing.db import upgrade

NOW = datetime(2026, 11, 20, tzinfo=UTC)
ACCOUNT = "acct_1Connected0000000"


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    name = f"whs_mig_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = sa.engine.make_url(PG_ADMIN_URL)
    yield base.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _insert(conn, table: str, **values) -> None:
    columns = ", ".join(values)
    conn.execute(
        sa.text(f"INSERT INTO {table} ({columns}) VALUES ({', '.join(':' + k for k in values)})"), values
    )


def _event(conn, event_id, object_id, account, livemode) -> None:
    _insert(conn, "stripe_events", id=event_id, type="x.y", livemode=livemode, account=account,
            object_id=object_id, received_at=NOW, status="processed", attempts=1, payload="{}")  # fmt: skip


def _old_rows(conn) -> None:
    """What a 0011 database of a Connect platform holds: no scopes, one mixed-currency adjustment."""
    customer = {"version_key": "1", "created_at": NOW, "updated_at": NOW, "entity_type": "organization"}
    _insert(conn, "customers", id="cus_conn", currency="usd", livemode=True, balance=-1000,
            credit_balance=1000, **customer)  # fmt: skip
    _insert(conn, "customers", id="cus_plat", currency="usd", livemode=False, balance=None,
            credit_balance=300, **customer)  # fmt: skip
    _event(conn, "evt_c", "cus_conn", ACCOUNT, True)
    _event(conn, "evt_i", "in_conn", ACCOUNT, True)
    invoice = {"status": "open", "credit_applied": 0, "attempt_count": 0, "lines_complete": True,
               "pre_payment_credit_notes_amount": 0, "post_payment_credit_notes_amount": 0,
               "amount_overpaid": 0, "credited_in_full": False, "version_key": "1",
               "updated_at": NOW}  # fmt: skip
    _insert(conn, "invoices", id="in_conn", customer_id="cus_conn", livemode=True, **invoice)
    _insert(conn, "invoices", id="in_plat", customer_id="cus_plat", livemode=False, **invoice)
    for invoice_id in ("in_conn", "in_plat"):
        _insert(conn, "invoice_lines", invoice_id=invoice_id, id=f"il_{invoice_id}", position=0,
                category="fixed_fee", amount=100, proration=False)  # fmt: skip
        _insert(conn, "notifications", kind="invoice_past_due", audience="admins", invoice_id=invoice_id,
                channels="email", created_at=NOW)  # fmt: skip
    ledger = {"updated_at": NOW}
    # cus_conn: a 2000 EUR credit note, and the adjustment 0003 invented to make it "add up" in USD.
    _insert(conn, "credit_ledger", customer_id="cus_conn", kind="credit_note", amount=2000, currency="eur",
            source_type="credit_note", source_id="cn_eur", **ledger)  # fmt: skip
    _insert(conn, "credit_ledger", customer_id="cus_conn", kind="adjustment", amount=-1000, currency="usd",
            source_type="customer", source_id="cus_conn", **ledger)  # fmt: skip
    _insert(conn, "credit_ledger", customer_id="cus_plat", kind="credit_note", amount=300, currency=None,
            source_type="credit_note", source_id="cn_plat", **ledger)  # fmt: skip


def test_upgrade_fills_scopes_from_the_event_log_and_splits_credit_by_currency(empty_url):
    upgrade(empty_url, "0011")
    engine = sa.create_engine(empty_url)
    with engine.begin() as conn:
        _old_rows(conn)
    upgrade(empty_url)
    with engine.connect() as conn:

        def scopes(table, key, value):
            rows = conn.execute(
                sa.text(f"SELECT livemode, account FROM {table} WHERE {key} = :v"), {"v": value}
            )
            return {(bool(livemode), account) for livemode, account in rows}

        connected, platform = {(True, ACCOUNT)}, {(False, None)}
        assert scopes("customers", "id", "cus_conn") == connected
        assert scopes("invoices", "id", "in_conn") == connected
        assert scopes("invoice_lines", "invoice_id", "in_conn") == connected
        assert scopes("notifications", "invoice_id", "in_conn") == connected
        assert scopes("credit_ledger", "customer_id", "cus_conn") == connected
        for table, key, value in (("customers", "id", "cus_plat"), ("invoices", "id", "in_plat"),
                                  ("notifications", "invoice_id", "in_plat")):  # fmt: skip
            assert scopes(table, key, value) == platform

        balances = dict(
            ((customer, currency), (credit, reported))
            for customer, currency, credit, reported in conn.execute(
                sa.text("SELECT customer_id, currency, credit_balance, reported FROM customer_balances")
            )
        )
        assert balances == {
            ("cus_conn", "usd"): (1000, 1000),  # Stripe's balance, in the customer's currency
            ("cus_conn", "eur"): (2000, None),  # the EUR credit note, no longer absorbed by USD
            ("cus_plat", "usd"): (300, None),  # no customer snapshot yet: the explained rows
        }
        adjustments = conn.execute(
            sa.text("SELECT customer_id, currency, amount FROM credit_ledger WHERE kind = 'adjustment'")
        ).all()
        assert [tuple(row) for row in adjustments] == [("cus_conn", "usd", 1000)]
        credit = dict(conn.execute(sa.text("SELECT id, credit_balance FROM customers")).all())
        assert credit == {"cus_conn": 1000, "cus_plat": 300}
    engine.dispose()

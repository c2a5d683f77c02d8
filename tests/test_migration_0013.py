"""Migration 0013 on a database with data: invoice payments get their account (and mode) like
every other mirrored row, from their invoice or else from the event log."""

import sqlalchemy as sa

from tests.test_migration_0012 import ACCOUNT, NOW, _event, _insert, empty_url  # noqa: F401 (fixture)
from webhook_service.processing.db import upgrade

INVOICE = {"status": "open", "credit_applied": 0, "attempt_count": 0, "lines_complete": True,
           "pre_payment_credit_notes_amount": 0, "post_payment_credit_notes_amount": 0,
           "amount_overpaid": 0, "credited_in_full": False, "version_key": "1",
           "updated_at": NOW}  # fmt: skip


def _payment(conn, payment_id, invoice_id, livemode=False) -> None:
    _insert(conn, "invoice_payments", id=payment_id, invoice_id=invoice_id, status="paid", amount_paid=100,
            currency="usd", livemode=livemode, version_key="1", updated_at=NOW)  # fmt: skip


def test_upgrade_gives_invoice_payments_their_invoices_scope_or_the_event_logs(empty_url):  # noqa: F811
    upgrade(empty_url, "0012")
    engine = sa.create_engine(empty_url)
    with engine.begin() as conn:
        _insert(conn, "invoices", id="in_conn", livemode=True, account=ACCOUNT, **INVOICE)
        _payment(conn, "inpay_of_conn", "in_conn")  # 0011 took livemode from the payment object: false
        _payment(conn, "inpay_logged", "in_unseen")
        _event(conn, "evt_p", "inpay_logged", ACCOUNT, True)
        _payment(conn, "inpay_plat", "in_unseen")
    upgrade(empty_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, livemode, account FROM invoice_payments")).all()
    assert {payment_id: (bool(live), account) for payment_id, live, account in rows} == {
        "inpay_of_conn": (True, ACCOUNT),
        "inpay_logged": (True, ACCOUNT),
        "inpay_plat": (False, None),
    }
    engine.dispose()

"""Test and live mode, and two Connect accounts, told apart on every mirrored row."""

import copy
import random
import re
from datetime import UTC, datetime

import era_shapes as era
import pytest
import sqlalchemy as sa
from builder import (
    NEW_API,
    Customer,
    CustomerHistory,
    Ids,
    InvoiceLifecycle,
    Line,
    credit_note,
    credit_note_event,
)

from tests.handlers.test_invoices import apply
from webhook_service.core.errors import PermanentEventError
from webhook_service.core.models import (
    CreditLedgerEntry,
    CreditNote,
    CustomerBalance,
    Invoice,
    InvoiceLine,
    InvoicePayment,
    Notification,
)
from webhook_service.core.models import Customer as CustomerRow
from webhook_service.processing.sweep import sweep_past_due

T = 1_793_000_000
DAY = 86400
ACCOUNT_A, ACCOUNT_B = "acct_1AlphaShop00000000", "acct_1BetaStore00000000"


def scoped(events, account=None, livemode=False):
    """The events as Stripe sends them for `account` (None: the platform) in that mode."""
    for event in events:
        event["livemode"] = livemode
        event["data"]["object"]["livemode"] = livemode
        if account is None:
            event.pop("account", None)
        else:
            event["account"] = account
    return events


def story(seed: str, customer: Customer, account=None, livemode=False, *, overdue=True):
    """A customer with credit from a credit note, and an invoice that goes past due."""
    ids = Ids(seed)
    history = CustomerHistory(ids, customer, NEW_API)
    invoice = InvoiceLifecycle(
        ids, customer, NEW_API, T, [Line(ids.make("il"), "Plan", 9000), Line(ids.make("il"), "Usage", 1000)],
        number=f"{seed.upper()}-1", collection_method="send_invoice", days_until_due=10, account=account,
        livemode=livemode,
    )  # fmt: skip
    note = credit_note(
        ids, invoice, T + DAY, amount=500, credit_type="post_payment", to_balance=500, number=f"{seed}-CN"
    )  # fmt: skip
    events = [history.created(T - DAY), invoice.created(T), invoice.finalized(T + 60)]
    events += [credit_note_event(ids, "credit_note.created", T + DAY, note, NEW_API)]
    events += [history.balance_changed(T + DAY, -500)]
    if overdue:
        events.append(invoice.overdue(T + 11 * DAY))
    return scoped(events, account, livemode), invoice.id, note["id"]


def scopes_of(services, model, **where):
    with services.db.sessions() as session:
        rows = session.scalars(sa.select(model).filter_by(**where)).all()
        return {(row.livemode, row.account) for row in rows}


@pytest.mark.parametrize("seed", range(3))
def test_two_accounts_interleaved_keep_their_own_rows(services, seed):
    a_events, a_invoice, a_note = story("alpha", Customer("cus_1AlphaBuyer000000000", "Ann", "ann@a.example"),
                                        ACCOUNT_A, livemode=True)  # fmt: skip
    b_events, b_invoice, b_note = story("beta", Customer("cus_1BetaBuyer0000000000", "Bob", "bob@b.example"),
                                        ACCOUNT_B, livemode=True)  # fmt: skip
    events = a_events + b_events
    random.Random(seed).shuffle(events)  # the two accounts' deliveries interleave in any order
    apply(services, events)
    for account, invoice_id, note_id, customer_id in (
        (ACCOUNT_A, a_invoice, a_note, "cus_1AlphaBuyer000000000"),
        (ACCOUNT_B, b_invoice, b_note, "cus_1BetaBuyer0000000000"),
    ):
        expected = {(True, account)}
        assert scopes_of(services, Invoice, id=invoice_id) == expected
        assert scopes_of(services, InvoiceLine, invoice_id=invoice_id) == expected
        assert scopes_of(services, CreditNote, id=note_id) == expected
        assert scopes_of(services, CustomerRow, id=customer_id) == expected
        assert scopes_of(services, CreditLedgerEntry, customer_id=customer_id) == expected
        assert scopes_of(services, CustomerBalance, customer_id=customer_id) == expected
        assert scopes_of(services, Notification, invoice_id=invoice_id) == expected
        with services.db.sessions() as session:
            assert session.get(CustomerRow, customer_id).credit_balances == {"usd": 500}


def test_the_sweep_and_its_notifications_keep_modes_and_accounts_apart(services):
    events = []
    for seed, account, livemode in (
        ("plat-test", None, False),
        ("plat-live", None, True),
        ("conn", ACCOUNT_A, True),
    ):
        customer = Customer(f"cus_1{seed.replace('-', '')}{'0' * 10}", seed, f"{seed}@x.example")
        events += story(seed, customer, account, livemode, overdue=False)[0]
    apply(services, events)
    moved = sweep_past_due(services.db, now=datetime.fromtimestamp(T + 20 * DAY, UTC))
    assert moved == 3
    with services.db.sessions() as session:
        notes = session.scalars(sa.select(Notification).join(Invoice)).all()
        by_invoice = {}
        for note in notes:
            invoice = session.get(Invoice, note.invoice_id)
            assert (note.livemode, note.account) == (invoice.livemode, invoice.account)
            by_invoice.setdefault((note.livemode, note.account), set()).add(note.audience)
    assert by_invoice == {
        (False, None): {"admins", "customer"},
        (True, None): {"admins", "customer"},
        (True, ACCOUNT_A): {"admins", "customer"},
    }


@pytest.mark.parametrize(
    "account, livemode, intruder",
    [(ACCOUNT_B, True, f"account {ACCOUNT_B} (live mode)"),
     (ACCOUNT_A, False, f"account {ACCOUNT_A} (test mode)"),
     (None, True, "the platform (live mode)")],
)  # fmt: skip
def test_an_id_seen_in_another_account_or_mode_is_refused_not_merged(services, account, livemode, intruder):
    customer = Customer("cus_1GammaBuyer000000000", "Gus", "gus@g.example")
    events, invoice_id, _ = story("gamma", customer, ACCOUNT_A, livemode=True, overdue=False)
    apply(services, events)
    other = scoped([dict(copy.deepcopy(events[2]), id="evt_1Intruder000000000000")], account, livemode)[0]
    message = f"belongs to account {ACCOUNT_A} (live mode), the event is from {intruder}"
    with pytest.raises(PermanentEventError, match=re.escape(message)):
        apply(services, [other])
    assert scopes_of(services, Invoice, id=invoice_id) == {(True, ACCOUNT_A)}


def test_a_malformed_account_fails_the_event(services):
    events, _, _ = story("delta", Customer("cus_1DeltaBuyer000000000", "Di", "di@d.example"), overdue=False)
    events[0]["account"] = {"id": "acct_1"}
    with pytest.raises(PermanentEventError, match="account: expected"):
        apply(services, events[:1])


def _in_scope(event, account, livemode):
    """An era fixture as Stripe sends it for `account` in that mode: only the envelope says it
    (an InvoicePayment in an invoice's `payments.data` carries no `livemode` of its own)."""
    event["account"], event["livemode"] = account, livemode
    event["data"]["object"].pop("livemode", None)
    for payment in (event["data"]["object"].get("payments") or {}).get("data") or []:
        payment.pop("livemode", None)
    return event


def _payment_scopes(services):
    with services.db.sessions() as session:
        rows = session.execute(sa.select(InvoicePayment.id, InvoicePayment.livemode, InvoicePayment.account))
        return {payment_id: (livemode, account) for payment_id, livemode, account in rows}


def test_invoice_payments_carry_the_events_mode_and_account(services):
    """Like every mirrored row: an InvoicePayment, from its own event or from an invoice's
    `payments.data`, has the event's livemode and account, and one seen in another account fails."""
    version = "2026-10-28.endive"
    payment = _in_scope(era.load(version, "invoice_payment.paid"), ACCOUNT_A, True)
    paid = era.load(version, "invoice.paid")
    rest = {"id": "inpay_1EraEmbedded000000", "object": "invoice_payment", "invoice": era.INVOICE,
            "amount_paid": era.TOTAL - era.PARTIAL_PAYMENT, "currency": "usd", "status": "paid"}  # fmt: skip
    paid["data"]["object"]["payments"] = {"object": "list", "data": [rest], "has_more": False}
    apply(services, [payment, _in_scope(paid, ACCOUNT_A, True)])
    scopes = _payment_scopes(services)
    assert scopes == {era.PAYMENT: (True, ACCOUNT_A), rest["id"]: (True, ACCOUNT_A)}
    other = _in_scope(era.load(version, "invoice_payment.paid"), ACCOUNT_B, True)
    other["id"] = "evt_1EraPaymentOtherAcct00"
    other["created"] += 60
    with pytest.raises(
        PermanentEventError, match=rf"invoice payment {era.PAYMENT} belongs to account {ACCOUNT_A}"
    ):
        apply(services, [other])
    assert set(_payment_scopes(services).values()) == {(True, ACCOUNT_A)}

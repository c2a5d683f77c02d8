"""handlers/invoices.py: field mapping for both API shapes and the status rules, on each database."""

import pytest
import sqlalchemy as sa
from builder import NEW_API, OLD_API, Customer, Ids, InvoiceLifecycle, Line

import handlers
from tests.conftest import load_fixture_events
from webhook_service.core.errors import PermanentEventError
from webhook_service.core.models import Customer as CustomerRow
from webhook_service.core.models import Invoice
from webhook_service.processing import locks

T = 1_790_000_000
ALICE = Customer("cus_1AliceAlice00000000000", "Alice Ltd", "alice@example.com")


def apply(services, events):
    """Apply events one transaction each, as single-event jobs do."""
    for event in events:
        with services.db.sessions() as session, session.begin():
            locks.lock_related_rows(session, [event])
            handlers.handle(event, session)


def load_invoice(services, invoice_id) -> Invoice:
    with services.db.sessions() as session:
        invoice = session.get(Invoice, invoice_id)
        assert invoice is not None
        invoice.lines, invoice.status_history  # load while the session is open  # noqa: B018
        return invoice


def history(invoice):
    return [(h.from_status, h.to_status) for h in sorted(invoice.status_history, key=lambda h: h.rank)]


def by_number(number):
    events = [e for e in load_fixture_events() if (e["data"]["object"].get("number") or "") == number]
    invoice_id = events[0]["data"]["object"]["id"]
    return [e for e in load_fixture_events() if e["data"]["object"].get("id") == invoice_id]


def simple(api=NEW_API, **kwargs):
    ids = Ids(f"simple-{api}-{sorted(kwargs.items())}")
    lines = [Line(ids.make("il"), "Plan", 5000, price_id="price_1Plan", product_id="prod_1Plan")]
    return InvoiceLifecycle(ids, ALICE, api, T, lines, number="ALICE-1", **kwargs)


def test_pre_basil_payload_is_fully_mapped(services):
    events = by_number("ACME-0001")
    apply(services, events)
    obj = events[-1]["data"]["object"]
    inv = load_invoice(services, obj["id"])
    assert obj["tax"] == 1170 and "total_taxes" not in obj  # really the old shape
    assert (inv.number, inv.status, inv.stripe_status, inv.currency) == ("ACME-0001", "paid", "paid", "usd")
    assert (inv.subtotal, inv.tax, inv.total) == (14620, 1170, 15790)
    assert (inv.amount_due, inv.amount_paid, inv.amount_remaining, inv.credit_applied) == (15790, 15790, 0, 0)
    assert inv.subscription_id == obj["subscription"]
    assert inv.billing_reason == "subscription_cycle" and inv.collection_method == "charge_automatically"
    assert int(inv.issued_at.timestamp()) == obj["status_transitions"]["finalized_at"]
    assert int(inv.paid_at.timestamp()) == obj["status_transitions"]["paid_at"]
    assert int(inv.period_start.timestamp()) == obj["period_start"]
    assert inv.hosted_invoice_url == obj["hosted_invoice_url"] and inv.invoice_pdf == obj["invoice_pdf"]
    assert inv.livemode is False and inv.due_date is None and inv.voided_at is None
    assert [(line.category, line.amount) for line in inv.lines] == [
        ("fixed_fee", 9900), ("usage", 6170), ("adjustment", -1450),
    ]  # fmt: skip
    assert inv.lines[1].quantity == 123400 and inv.lines[0].price_id == "price_1ProMonthly"
    assert history(inv) == [(None, "draft"), ("draft", "open"), ("open", "paid")]


def test_current_payload_is_fully_mapped(services):
    events = by_number("ACME-0013")
    apply(services, events)
    obj = events[-1]["data"]["object"]
    inv = load_invoice(services, obj["id"])
    assert "tax" not in obj and "subscription" not in obj and "paid" not in obj  # really the new shape
    assert inv.tax == sum(t["amount"] for t in obj["total_taxes"]) == 1184
    assert inv.subscription_id == obj["parent"]["subscription_details"]["subscription"]
    assert inv.attempt_count == 2 and inv.status == "paid"
    assert [line.category for line in inv.lines] == ["fixed_fee", "usage"]
    assert inv.lines[0].price_id == "price_1ProMonthly"


def test_credit_from_the_balance_is_shown_on_the_invoice(services):
    life = simple(starting_balance=-1200)
    apply(services, [life.created(T), life.finalized(T + 10)])
    inv = load_invoice(services, life.id)
    assert (inv.starting_balance, inv.ending_balance, inv.credit_applied) == (-1200, 0, 1200)
    assert inv.amount_due == 3800 and inv.amount_remaining == 3800


def test_status_never_moves_backwards_and_stale_events_do_not_overwrite(services):
    life = simple()
    created = life.created(T)
    finalized = life.finalized(T + 5)
    paid, succeeded = life.paid(T + 9)
    apply(services, [paid, succeeded, finalized, created])  # newest first
    inv = load_invoice(services, life.id)
    assert inv.status == "paid" and inv.amount_paid == 5000 and inv.number == "ALICE-1"
    assert inv.source_event_id in (paid["id"], succeeded["id"])
    assert history(inv) == [(None, "draft"), ("draft", "open"), ("open", "paid")]
    assert [h.event_id for h in sorted(inv.status_history, key=lambda h: h.rank)] == [
        created["id"], finalized["id"], paid["id"],
    ]  # fmt: skip


@pytest.mark.parametrize("order", ["forward", "backward"])
def test_two_events_in_the_same_second_are_not_dropped(services, order):
    """The sync engine's bug (#268): the second of two same-second events is silently dropped."""
    life = simple(api=OLD_API)
    created = life.created(T)
    finalized = life.finalized(T + 60)
    failed = life.payment_failed(T + 60)  # same second as finalized, one more attempt
    events = [created, finalized, failed]
    apply(services, events if order == "forward" else events[::-1])
    inv = load_invoice(services, life.id)
    assert inv.attempt_count == 1 and inv.source_event_id == failed["id"]


@pytest.mark.parametrize("order", ["forward", "backward"])
def test_same_second_update_with_new_amounts_wins_in_any_order(services, order):
    events = by_number("GLOBEX-0007")[:2]  # invoice.created and invoice.updated, same second
    assert events[0]["created"] == events[1]["created"] and events[1]["type"] == "invoice.updated"
    apply(services, events if order == "forward" else events[::-1])
    inv = load_invoice(services, events[0]["data"]["object"]["id"])
    assert inv.subtotal == 158000 and len(inv.lines) == 2 and inv.source_event_id == events[1]["id"]


def test_every_status_change_is_recorded_once(services):
    life = simple(api=OLD_API)
    events = [life.created(T), life.finalized(T + 1), life.marked_uncollectible(T + 2), *life.paid(T + 3)]
    apply(services, events * 3)
    inv = load_invoice(services, life.id)
    assert history(inv) == [
        (None, "draft"),
        ("draft", "open"),
        ("open", "uncollectible"),
        ("uncollectible", "paid"),
    ]


def test_history_is_inferred_from_status_transitions_when_steps_are_missing(services):
    life = simple()
    life.created(T)
    life.finalized(T + 5)
    paid, _ = life.paid(T + 9)
    apply(services, [paid])  # only the last event ever arrived
    inv = load_invoice(services, life.id)
    assert history(inv) == [(None, "open"), ("open", "paid")]
    assert [int(h.at.timestamp()) for h in inv.status_history] == [T + 5, T + 9]


def test_void_after_open(services):
    life = simple(collection_method="send_invoice")
    apply(services, [life.voided(T + 9), life.finalized(T + 5), life.created(T)])
    inv = load_invoice(services, life.id)
    assert inv.status == "void" and int(inv.voided_at.timestamp()) == T + 9 and inv.due_date is not None
    assert history(inv)[-1] == ("open", "void")


def test_invoice_before_its_customer_creates_the_customer(services):
    life = simple()
    apply(services, [life.finalized(T + 5)])
    with services.db.sessions() as session:
        customer = session.get(CustomerRow, ALICE.id)
    assert (customer.name, customer.email, customer.currency) == ("Alice Ltd", "alice@example.com", "usd")
    assert load_invoice(services, life.id).customer_id == ALICE.id


def test_deleted_draft_is_marked_and_never_revived(services):
    life = simple()
    created = life.created(T)
    deleted = dict(life.created(T + 30), type="invoice.deleted")
    stale_update = life.updated(T + 20, description="late edit")
    apply(services, [created, deleted, stale_update])
    inv = load_invoice(services, life.id)
    assert inv.deleted_at is not None and int(inv.deleted_at.timestamp()) == T + 30


def test_paginated_lines_are_flagged(services):
    life = simple()
    event = life.created(T)
    event["data"]["object"]["lines"]["has_more"] = True
    apply(services, [event])
    assert load_invoice(services, life.id).lines_complete is False


@pytest.mark.parametrize(
    "change, message",
    [
        ({"id": None}, r"^data\.object\.id: expected an id, got null$"),
        ({"status": "bogus"}, r'^data\.object\.status: expected one of draft, .*, got "bogus"$'),
        ({"amount_due": "12.00"}, r'^data\.object\.amount_due: expected an integer, got "12\.00"$'),
    ],
)
def test_malformed_invoices_are_permanent_errors(services, change, message):
    life = simple()
    event = life.created(T)
    event["data"]["object"].update(change)
    with pytest.raises(PermanentEventError, match=message):
        apply(services, [event])
    with services.db.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Invoice)) == 0

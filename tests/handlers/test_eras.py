"""Every API era (fixtures/eras, written by fixtures/era_shapes.py) mirrors to the same state.

Each era's fixture of each handled event type describes the same invoice, customer and credit
note, so the expected mirror is written once here and checked against all of them: status,
dates, amounts, lines, collection method and history.
"""

from datetime import UTC, datetime

import era_shapes as era
import pytest
import sqlalchemy as sa

import handlers
from tests.conftest import clean_tables
from tests.handlers.test_invoices import apply, history, load_invoice
from webhook_service.core.models import CreditLedgerEntry, CreditNote, Customer

METERED = {"metered_price_ids": (era.METERED_PRICE,)}
PAST_DUE_TYPES = ("invoice.payment_failed", "invoice.overdue")
LINES = [("fixed_fee", 9900), ("usage", 6170), ("adjustment", -1450)]


@pytest.fixture
def config_overrides():
    return METERED


def at(ts):
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


def fresh(services):
    clean_tables(services.db.engine)


def expected_invoice(version: str, event_type: str) -> dict:
    e = era.Era(version)
    status, attempts, paid, event_at = era.INVOICE_STATE[event_type]
    has_amounts = e.since("2018-02-28")  # amount_paid / amount_remaining (else derived from `paid`)
    finalized = status != "draft"
    if has_amounts:
        issued = era.FINALIZED_AT if finalized else None
    else:
        issued = era.T  # `date`: the issue date of invoices that predate finalization
    amount_paid = paid if has_amounts else (era.TOTAL if status == "paid" else 0)
    portal = "past_due" if event_type in PAST_DUE_TYPES else status
    trail = {
        "draft": [(None, "draft")],
        "open": [(None, "open")] + ([("open", "past_due")] if portal == "past_due" else []),
    }.get(status, [(None, "open"), ("open", status)])
    transitions = e.since("2019-03-14")
    due = era.FINALIZED_AT + 30 * 86400 if e.collection == "send_invoice" and e.since("2017-01-01") else None
    remaining = max(0, era.TOTAL - amount_paid)
    return {
        "status": portal,
        "stripe_status": status,
        "amounts": (era.SUBTOTAL, era.TAX, era.TOTAL, era.TOTAL, amount_paid, remaining),
        "attempt_count": attempts,
        "overpaid": era.OVERPAID if event_type == "invoice.overpaid" and e.since("2025-03-31") else 0,
        "created_at": at(era.T),
        "issued_at": at(issued),
        "paid_at": at((era.PAID_AT if transitions else event_at) if status == "paid" else None),
        "voided_at": at((era.CLOSED_AT if transitions else event_at) if status == "void" else None),
        "due_date": at(due),
        "collection_method": e.collection,
        "history": trail,
    }  # fmt: skip


def mirrored_invoice(services) -> dict:
    inv = load_invoice(services, era.INVOICE)
    return {
        "status": inv.status,
        "stripe_status": inv.stripe_status,
        "amounts": (inv.subtotal, inv.tax, inv.total, inv.amount_due, inv.amount_paid, inv.amount_remaining),
        "attempt_count": inv.attempt_count,
        "overpaid": inv.amount_overpaid,
        "created_at": inv.created_at,
        "issued_at": inv.issued_at,
        "paid_at": inv.paid_at,
        "voided_at": inv.voided_at,
        "due_date": inv.due_date,
        "collection_method": inv.collection_method,
        "history": history(inv),
    }


@pytest.mark.parametrize("version", era.ERAS)
def test_every_era_fixture_passes_its_declared_reading(version):
    for event_type in era.event_types(version):
        event = era.load(version, event_type)
        assert event["api_version"] == version
        assert handlers.read(event)["data"]["object"]["id"]


@pytest.mark.parametrize("version", era.ERAS)
def test_each_invoice_event_of_each_era_mirrors_stripe_state(services, version):
    wrong = {}
    for event_type in era.INVOICE_TYPES:
        fresh(services)
        apply(services, [era.load(version, event_type)])
        want, got = expected_invoice(version, event_type), mirrored_invoice(services)
        if want != got:
            wrong[event_type] = {k: (want[k], got[k]) for k in want if want[k] != got[k]}
        inv = load_invoice(services, era.INVOICE)
        assert [(line.category, line.amount) for line in inv.lines] == LINES, (event_type, inv.lines)
        assert len({line.id for line in inv.lines}) == 3
        assert inv.lines[1].quantity == 123_400 and inv.customer_id == era.CUSTOMER
        assert inv.subscription_id == era.SUBSCRIPTION
    assert not wrong, wrong


@pytest.mark.parametrize("version", era.ERAS)
def test_an_era_lifecycle_in_any_order_gives_the_same_trail(services, version):
    types = ["invoice.created", "invoice.updated", "invoice.finalized", "invoice.payment_failed",
             "invoice.paid", "invoice.payment_succeeded"]  # fmt: skip
    events = [era.load(version, t) for t in types]
    results = []
    for order in (events, events[::-1], events[2:] + events[:2]):
        fresh(services)
        apply(services, order)
        inv = load_invoice(services, era.INVOICE)
        results.append(
            (inv.status, history(inv), inv.paid_at, inv.issued_at, inv.amount_paid, inv.lines[0].id)
        )
    assert results[0][:2] == (
        "paid",
        [(None, "draft"), ("draft", "open"), ("open", "past_due"), ("past_due", "paid")],
    )
    assert results[0] == results[1] == results[2]


def test_lines_that_share_a_subscription_id_keep_apart_and_stable(services):
    """Before 2018-05-21 subscription lines carry the subscription's id; a second snapshot keeps
    the same line identities instead of failing on a duplicate key."""
    created, paid = era.load("2016-07-06", "invoice.created"), era.load("2016-07-06", "invoice.paid")
    assert [line["id"] for line in created["data"]["object"]["lines"]["data"]][:2] == [era.SUBSCRIPTION] * 2
    apply(services, [created])
    before = [line.id for line in load_invoice(services, era.INVOICE).lines]
    apply(services, [paid])
    after = [line.id for line in load_invoice(services, era.INVOICE).lines]
    assert before == after and len(set(after)) == 3


@pytest.mark.parametrize("config_overrides", [{}])
@pytest.mark.parametrize("version", era.ERAS)
def test_metered_lines_without_configuration_come_from_the_payload(services, version):
    apply(services, [era.load(version, "invoice.paid")])
    categories = [line.category for line in load_invoice(services, era.INVOICE).lines]
    carries_usage_type = era.Era(version).since("2018-05-21") and not era.Era(version).since("2025-03-31")
    assert categories[1] == ("usage" if carries_usage_type else "fixed_fee")


@pytest.mark.parametrize("config_overrides", [{}])
def test_an_expanded_price_says_metered_on_basil_and_later(services):
    event = era.load("2026-10-28.endive", "invoice.paid")
    details = event["data"]["object"]["lines"]["data"][1]["pricing"]["price_details"]
    details["price"] = {"id": era.METERED_PRICE, "object": "price", "recurring": {"usage_type": "metered"}}
    apply(services, [event])
    assert [line.category for line in load_invoice(services, era.INVOICE).lines][1] == "usage"


@pytest.mark.parametrize("version", era.ERAS)
def test_each_customer_event_of_each_era(services, version):
    for event_type, credit in (
        ("customer.created", 0),
        ("customer.updated", era.CREDIT),
        ("customer.deleted", era.CREDIT),
    ):
        fresh(services)
        apply(services, [era.load(version, event_type)])
        with services.db.sessions() as session:
            customer = session.get(Customer, era.CUSTOMER)
            got = (customer.name, customer.email, customer.currency, customer.credit_balance,
                   customer.entity_type, customer.entity_id, customer.deleted_at is not None)  # fmt: skip
        want = ("Initrode", "billing@initrode.example", "usd", credit, "company", "org_42",
                event_type == "customer.deleted")  # fmt: skip
        assert got == want, event_type


@pytest.mark.parametrize("version", era.ERAS)
def test_each_credit_note_event_of_each_era(services, version):
    for event_type in era.CREDIT_NOTE_TYPES:
        fresh(services)
        apply(services, [era.load(version, event_type)])
        void = event_type == "credit_note.voided"
        with services.db.sessions() as session:
            note = session.get(CreditNote, era.CREDIT_NOTE)
            got = (note.status, note.type, note.amount, note.invoice_id, note.credited_to_balance,
                   note.pre_payment_amount, note.post_payment_amount, note.voided_at is not None)  # fmt: skip
            entries = session.execute(
                sa.select(CreditLedgerEntry.kind, CreditLedgerEntry.amount).order_by(CreditLedgerEntry.kind)
            ).all()
        want = (
            "void" if void else "issued",
            "post_payment",
            era.CREDIT,
            era.INVOICE,
            era.CREDIT,
            0,
            era.CREDIT,
            void,
        )
        assert got == want, event_type
        expected = [("credit_note", era.CREDIT)] + ([("credit_note_voided", -era.CREDIT)] if void else [])
        assert sorted(entries) == expected, event_type


def test_customer_currency_is_its_first_invoice_not_its_newest(services):
    first = era.load("2024-06-20", "invoice.finalized")
    newer = era.load("2024-06-20", "invoice.finalized")
    newer["id"] = "evt_1EraNewerInvoiceFinal00"
    newer["created"] += 86400 * 30
    obj = newer["data"]["object"]
    obj.update(id="in_1EraNewerInvoice000000", currency="eur", created=obj["created"] + 86400 * 30)
    for order in ([first, newer], [newer, first]):
        fresh(services)
        apply(services, order)
        with services.db.sessions() as session:
            assert session.get(Customer, era.CUSTOMER).currency == "usd"
    # The customer's own currency wins over any invoice's.
    customer = era.load("2024-06-20", "customer.updated")
    customer["data"]["object"]["currency"] = "gbp"
    apply(services, [customer, newer])
    with services.db.sessions() as session:
        assert session.get(Customer, era.CUSTOMER).currency == "gbp"


BASIL_ON = [v for v in era.ERAS if era.Era(v).since("2025-03-31")]
PAYMENTS_ON = [v for v in era.ERAS if era.Era(v).since(era.INVOICE_PAYMENT_FROM)]


@pytest.mark.parametrize("version", PAYMENTS_ON)
def test_a_partial_payment_updates_the_invoice_amounts_in_any_order(services, version):
    finalized, payment = era.load(version, "invoice.finalized"), era.load(version, "invoice_payment.paid")
    for order in ([finalized, payment], [payment, finalized], [payment, payment, finalized]):
        fresh(services)
        apply(services, order)
        inv = load_invoice(services, era.INVOICE)
        part = era.PARTIAL_PAYMENT
        assert (inv.status, inv.amount_paid, inv.amount_remaining) == ("open", part, era.TOTAL - part)
    apply(services, [era.load(version, "invoice.paid")])
    inv = load_invoice(services, era.INVOICE)
    assert (inv.status, inv.amount_paid, inv.amount_remaining) == ("paid", era.TOTAL, 0)


@pytest.mark.parametrize("version", BASIL_ON)
def test_an_overpaid_invoice_shows_the_excess_and_credits_it(services, version):
    for order in (["invoice.paid", "invoice.overpaid"], ["invoice.overpaid", "invoice.paid"]):
        fresh(services)
        apply(services, [era.load(version, t) for t in order])
        inv = load_invoice(services, era.INVOICE)
        assert (inv.amount_paid, inv.amount_remaining, inv.amount_overpaid) == (
            era.TOTAL + era.OVERPAID, 0, era.OVERPAID,
        )  # fmt: skip
        with services.db.sessions() as session:
            kinds = session.execute(sa.select(CreditLedgerEntry.kind, CreditLedgerEntry.amount)).all()
            assert [tuple(k) for k in kinds] == [("overpayment", era.OVERPAID)]
            assert session.get(Customer, era.CUSTOMER).credit_balance == era.OVERPAID


def test_an_old_version_rendered_later_carries_new_fields_beside_old_ones(services):
    """Stripe adds fields to every API version (additions are not breaking changes), so an endpoint
    pinned to an old version gets `status`, `status_transitions`, `created` and `collection_method`
    beside `date`, `billing`, `closed` and `forgiven` once those exist (a committed 2018-08-23
    webhook sent in 2019 has all of them: docs/design.md, "API eras"). The newer fields win, and
    the old ones never contradict them into another status."""
    wrong = {}
    for event_type in era.INVOICE_TYPES:
        event = era.load("2017-08-15", event_type)
        later = era.load("2019-03-14", event_type)["data"]["object"]
        event["data"]["object"] = later | event["data"]["object"]  # the old version's own fields kept
        assert {"date", "billing", "closed", "forgiven", "status", "status_transitions"} <= set(
            event["data"]["object"]
        )
        fresh(services)
        apply(services, [event])
        want, got = expected_invoice("2019-03-14", event_type), mirrored_invoice(services)
        if want != got:
            wrong[event_type] = {k: (want[k], got[k]) for k in want if want[k] != got[k]}
    assert not wrong, wrong


@pytest.mark.parametrize("version", era.ERAS)
def test_a_finalized_whole_list_and_a_truncated_later_snapshot_in_any_order_in_every_era(services, version):
    """A finalized invoice's lines never change, so its whole list, once mirrored, stays when a
    later snapshot carries only the first page, and an older whole list completes a truncated row:
    compared by line identity (`unique_id`, shared subscription ids), not by the raw `id`."""
    whole = era.load(version, "invoice.finalized")
    truncated = era.load(version, "invoice.paid")
    truncated["data"]["object"]["lines"].update(
        data=truncated["data"]["object"]["lines"]["data"][:1], has_more=True
    )
    for order in ([whole, truncated], [truncated, whole]):
        fresh(services)
        apply(services, order)
        inv = load_invoice(services, era.INVOICE)
        got = (inv.stripe_status, inv.lines_complete, [(line.category, line.amount) for line in inv.lines])
        assert got == ("paid", True, LINES), (order[0]["type"], got)

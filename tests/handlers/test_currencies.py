"""Credit per currency: balances and the ledger never add amounts of two currencies."""

import random

import pytest
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
from webhook_service.core.models import Customer as CustomerRow

T = 1_793_000_000
DAY = 86400
FRANK = Customer("cus_1FrankFreight0000000000", "Frank Freight", "ap@frank.example")


def state(services, customer_id=FRANK.id):
    """(credit_balance, credit_balances, {currency: sum of ledger rows}, adjustments by currency)."""
    with services.db.sessions() as session:
        customer = session.get(CustomerRow, customer_id)
        sums: dict[str, int] = {}
        for entry in customer.ledger:
            sums[entry.currency] = sums.get(entry.currency, 0) + entry.amount
        adjustments = {e.currency: e.amount for e in customer.ledger if e.kind == "adjustment"}
        return customer.credit_balance, customer.credit_balances, sums, adjustments


def eur_credit_story():
    """A USD customer (-1000 USD balance, i.e. 1000 credit) gets a 2000 EUR credit note to its balance."""
    ids = Ids("currencies")
    history = CustomerHistory(ids, FRANK, NEW_API)
    usd = InvoiceLifecycle(
        ids, FRANK, NEW_API, T, [Line(ids.make("il"), "Plan", 5000)], number="FRANK-0001"
    )  # fmt: skip
    eur = InvoiceLifecycle(
        ids, FRANK, NEW_API, T + 60, [Line(ids.make("il"), "EU plan", 8000)], number="FRANK-EU-0001",
        currency="eur",
    )  # fmt: skip
    note = credit_note(
        ids, eur, T + 2 * DAY, amount=2000, credit_type="post_payment", to_balance=2000, number="FRANK-EU-CN"
    )  # fmt: skip
    events = [history.created(T - DAY), usd.created(T), usd.finalized(T + 60)]
    events += [eur.created(T + 60), eur.finalized(T + 120), *eur.paid(T + DAY)]
    events += [credit_note_event(ids, "credit_note.created", T + 2 * DAY, note, NEW_API)]
    events += [history.balance_changed(T + 3 * DAY, -1000)]  # a USD credit from the dashboard
    return events


def test_a_credit_note_in_another_currency_is_credit_in_that_currency(services):
    apply(services, eur_credit_story())
    credit, balances, sums, adjustments = state(services)
    assert credit == 1000  # the customer's own currency (usd) only
    assert balances == {"usd": 1000, "eur": 2000}
    assert sums == balances  # each currency's ledger adds up to that currency's balance
    assert adjustments == {"usd": 1000}  # the dashboard credit; no invented adjustment for the EUR note


@pytest.mark.parametrize("seed", range(4))
def test_per_currency_state_does_not_depend_on_delivery_order(services, seed):
    events = eur_credit_story()
    random.Random(seed).shuffle(events)
    apply(services, events)
    assert state(services) == (1000, {"usd": 1000, "eur": 2000}, {"usd": 1000, "eur": 2000}, {"usd": 1000})


def test_invoice_credit_balance_reports_every_currency(services):
    ids = Ids("icb")
    history = CustomerHistory(ids, FRANK, NEW_API)
    event = history.balance_changed(T, -700)
    event["data"]["object"]["invoice_credit_balance"] = {"usd": 700, "eur": 1250, "gbp": 0}
    apply(services, [history.created(T - DAY), event])
    credit, balances, sums, adjustments = state(services)
    assert credit == 700 and balances == {"usd": 700, "eur": 1250, "gbp": 0}
    assert adjustments == {"usd": 700, "eur": 1250} and sums == {"usd": 700, "eur": 1250}


def test_a_newer_snapshot_without_the_map_leaves_other_currencies_to_the_ledger(services):
    ids = Ids("icb-later")
    history = CustomerHistory(ids, FRANK, NEW_API)
    with_map = history.balance_changed(T, -700)
    with_map["data"]["object"]["invoice_credit_balance"] = {"usd": 700, "eur": 1250}
    later = history.balance_changed(T + DAY, -300)  # no map: it says nothing about EUR
    apply(services, [later, with_map])
    credit, balances, _, adjustments = state(services)
    assert credit == 300 and balances == {"usd": 300} and adjustments == {"usd": 300}


@pytest.mark.parametrize(
    "value, message",
    [
        ("700", "invoice_credit_balance: expected an object"),
        ({"usd": "700"}, "invoice_credit_balance.usd: expected an integer"),
        ({"dollars": 700}, "keys must be currency codes"),
    ],
)
def test_a_malformed_credit_map_fails_the_event_naming_the_field(services, value, message):
    ids = Ids("icb-bad")
    event = CustomerHistory(ids, FRANK, NEW_API).created(T)
    event["data"]["object"]["invoice_credit_balance"] = value
    with pytest.raises(PermanentEventError, match=message):
        apply(services, [event])


@pytest.mark.parametrize("seed", range(3))
def test_a_currency_the_map_leaves_out_holds_no_credit(services, seed):
    """An expanded map lists every currency with a balance: a newer map without EUR says the EUR
    credit note's 2000 is gone (used, or removed in the dashboard), where a snapshot with no map
    at all says nothing about EUR and leaves it to the ledger."""
    events = eur_credit_story()
    later = CustomerHistory(Ids("currencies"), FRANK, NEW_API).balance_changed(T + 4 * DAY, -1000)
    later["data"]["object"]["invoice_credit_balance"] = {"usd": 1000}
    events.append(later)
    random.Random(seed).shuffle(events)
    apply(services, events)
    credit, balances, sums, adjustments = state(services)
    assert credit == 1000 and balances == {"usd": 1000, "eur": 0} and sums == balances
    assert adjustments == {"usd": 1000, "eur": -2000}  # Stripe's figure, the residual explained

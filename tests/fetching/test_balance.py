"""A customer's balance follows Stripe when credit is applied at finalization (no key needed)."""

import itertools

import pytest
from builder import NEW_API, Customer, CustomerHistory, Ids, InvoiceLifecycle, Line

from tests.conftest import clean_tables
from tests.helpers import mirror_state
from webhook_service.processing import drain

T = 1_795_300_000


def scenario(seed: str):
    ids = Ids(seed)
    who = Customer(ids.make("cus"), "Balance Co", "balance@example.com")
    history = CustomerHistory(ids, who, NEW_API)
    history.balance = -2000  # 2,000 of credit, from before this service started
    created = history.created(T - 100)
    lines = [Line(ids.make("il"), "Plan", 5000, price_id="price_1Plan")]
    life = InvoiceLifecycle(ids, who, NEW_API, T, lines, number=f"B-{seed}", starting_balance=-2000)
    return who, created, life


def credit_of(app, customer_id) -> tuple[int, dict]:
    state = mirror_state(app)
    customer = next(dict(row) for row in state["customers"] if dict(row)["id"] == customer_id)
    entries = [dict(e) for e in state["ledger"]]
    ledger = {e["kind"]: e["amount"] for e in entries if e["customer_id"] == customer_id}
    return customer["credit_balance"], ledger


def deliver(stripe, services, events):
    for event in events:
        assert stripe.post(event).status_code == 200
    drain.drain(services.db, services.queue, 500)


def test_credit_applied_at_finalization_with_no_customer_event_is_not_a_credit_stripe_lacks(
    app, stripe, services
):
    who, _, life = scenario("no-customer-event")
    deliver(stripe, services, [life.created(T), life.finalized(T + 10)])
    credit, ledger = credit_of(app, who.id)
    assert credit == 0  # Stripe's balance after applying the 2,000: ending_balance 0
    assert ledger["applied_to_invoice"] == -2000 and ledger["adjustment"] == 2000  # credit from before


def test_an_older_customer_snapshot_yields_to_the_invoice_then_a_newer_one_wins(app, stripe, services):
    who, created, life = scenario("older-snapshot")
    ids = Ids("older-snapshot-later")
    later = CustomerHistory(ids, who, NEW_API)
    later.balance, later.created_at = 0, T - 100
    refill = later.balance_changed(T + 60, -500)
    deliver(stripe, services, [created, life.finalized(T + 10)])
    assert credit_of(app, who.id)[0] == 0  # not the 2,000 the stale customer snapshot shows
    deliver(stripe, services, [refill])
    assert credit_of(app, who.id)[0] == 500


def test_voiding_gives_the_credit_back(app, stripe, services):
    who, created, life = scenario("voided")
    deliver(stripe, services, [created, life.finalized(T + 10), life.voided(T + 50)])
    assert credit_of(app, who.id)[0] == 2000


def test_balances_from_invoices_are_order_free(app, stripe, services, database_url):
    who, created, life = scenario("orders")
    events = [created, life.finalized(T + 10), *life.paid(T + 20)]
    results = set()
    for order in itertools.permutations(events):
        clean_tables(services.db.engine)
        deliver(stripe, services, list(order))
        results.add(credit_of(app, who.id)[0])
    assert results == {0}


@pytest.mark.parametrize("currency", ["eur"])
def test_an_invoice_in_another_currency_says_nothing_about_the_balance(app, stripe, services, currency):
    who, created, life = scenario("other-currency")
    finalized = life.finalized(T + 10)
    finalized["data"]["object"]["currency"] = currency
    deliver(stripe, services, [created, finalized])
    assert credit_of(app, who.id)[0] == 2000

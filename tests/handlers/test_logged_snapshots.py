"""Snapshots fetched by backfill or reconcile are logged events like any other: on a same-second
tie with a webhook they are ranked by the same evidence, so the end state does not depend on the
order the two were processed in (handlers/ordering.py `winner`)."""

import copy

import pytest
from builder import NEW_API, Customer, Ids, InvoiceLifecycle, Line

from tests.handlers.test_invoices import load_invoice
from webhook_service.processing import drain
from webhook_service.processing.snapshots import record_snapshots, snapshot_event

T = 1_795_400_000
FRED = Customer("cus_1FredFurniture00000000", "Fred Furniture", "fred@example.com")


def scenario():
    ids = Ids("logged-snapshots")
    lines = [Line(ids.make("il"), "Desk", 12000, price_id="price_1Desk", product_id="prod_1Desk")]
    life = InvoiceLifecycle(
        ids, FRED, NEW_API, T, lines, number="FRED-1", collection_method="send_invoice", days_until_due=30
    )
    created, finalized = life.created(T), life.finalized(T + 60)
    second = T + 600
    before = copy.deepcopy(finalized["data"]["object"])
    # What a backfill read at `second`: the invoice as finalized.
    fetched = snapshot_event(before, source="backfill", run=second, fetched_at=second)
    # A webhook of the same second that records a change away from exactly that state.
    changed = copy.deepcopy(finalized)
    changed.update(id=ids.make("evt"), type="invoice.updated", created=second)
    obj = changed["data"]["object"]
    obj["amount_due"] = obj["amount_remaining"] = before["amount_due"] - 2000
    changed["data"]["previous_attributes"] = {
        "amount_due": before["amount_due"],
        "amount_remaining": before["amount_remaining"],
    }
    return [created, finalized], fetched, changed


@pytest.mark.parametrize("webhook_first", [True, False])
def test_a_webhook_that_records_a_change_away_from_a_fetched_copy_wins_in_either_order(
    stripe, services, webhook_first
):
    history, fetched, webhook = scenario()
    for event in history:
        assert stripe.post(event).status_code == 200
    drain.drain(services.db, services.queue, 500)
    steps = [lambda: stripe.post(webhook), lambda: record_snapshots(services.db, services.queue, [fetched])]
    for step in steps if webhook_first else steps[::-1]:
        step()
        drain.drain(services.db, services.queue, 500)
    invoice = load_invoice(services, webhook["data"]["object"]["id"])
    assert invoice.amount_due == webhook["data"]["object"]["amount_due"]
    assert invoice.source_event_id == webhook["id"]

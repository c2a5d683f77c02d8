"""Without STRIPE_API_KEY a truncated list stays truncated, and says so: in the API and in /metrics."""

import pytest
from builder import NEW_API, Customer, Ids, InvoiceLifecycle, Line

from tests.helpers import run_worker

KEY = "portal-key-lines-0123456789"
T = 1_795_100_000


@pytest.fixture
def config_overrides():
    return {"portal_api_keys": (KEY,)}


def fifteen_line_invoice(seed: str) -> InvoiceLifecycle:
    """An invoice of 15 lines; the payload carries the first 10 with `has_more`, as Stripe's does."""
    ids = Ids(seed)
    lines = [Line(ids.make("il"), f"Seat {n}", 900 + n, price_id="price_1Seat") for n in range(15)]
    customer = Customer(ids.make("cus"), "Lines Co", "lines@example.com")
    return InvoiceLifecycle(ids, customer, NEW_API, T, lines, number="L-1")


def truncated(event: dict) -> dict:
    lines = event["data"]["object"]["lines"]
    lines["data"], lines["has_more"] = lines["data"][:10], True
    return event


def test_without_a_key_the_invoice_says_its_lines_are_incomplete(app, client, stripe):
    life = fifteen_line_invoice("no-key")
    assert stripe.post(truncated(life.finalized(T + 10))).status_code == 200
    run_worker(app)
    body = client.get(f"/api/v1/invoices/{life.id}", headers={"Authorization": f"Bearer {KEY}"}).get_json()
    assert body["lines_complete"] is False and len(body["lines"]) == 10
    listed = client.get("/api/v1/invoices", headers={"Authorization": f"Bearer {KEY}"}).get_json()
    assert [item["lines_complete"] for item in listed["items"]] == [False]
    assert "stripe_webhook_invoices_lines_incomplete 1.0" in client.get("/metrics").get_data(as_text=True)


def test_an_untruncated_invoice_is_complete_and_not_counted(app, client, stripe):
    life = fifteen_line_invoice("whole")
    assert stripe.post(life.finalized(T + 10)).status_code == 200
    run_worker(app)
    body = client.get(f"/api/v1/invoices/{life.id}", headers={"Authorization": f"Bearer {KEY}"}).get_json()
    assert body["lines_complete"] is True and len(body["lines"]) == 15
    assert "stripe_webhook_invoices_lines_incomplete 0.0" in client.get("/metrics").get_data(as_text=True)


@pytest.mark.parametrize("order", ["older_first", "newer_first"])
def test_an_older_snapshot_with_the_whole_list_completes_a_truncated_newer_one(app, client, stripe, order):
    """A finalized invoice's lines never change: whichever arrives last, the whole list is kept."""
    life = fifteen_line_invoice(f"mixed-{order}")
    whole = life.finalized(T + 10)
    cut = truncated(life.paid(T + 20)[0])
    for event in [whole, cut] if order == "older_first" else [cut, whole]:
        assert stripe.post(event).status_code == 200
        run_worker(app)
    body = client.get(f"/api/v1/invoices/{life.id}", headers={"Authorization": f"Bearer {KEY}"}).get_json()
    assert body["status"] == "paid" and body["lines_complete"] is True and len(body["lines"]) == 15

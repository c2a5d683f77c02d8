"""The client and the worker's enrichment against localstripe, a stateful fake Stripe server (PyPI).

What localstripe 1.15 serves and what it lacks (checked by hand, docs/design.md §7): invoices
built from subscriptions and invoice items, an invoice's lines (first page embedded with
`has_more`; `GET /v1/invoices/{id}/lines` takes `limit` but answers 400 to `starting_after`),
customers, and `GET /v1/events` (`type`, `created`, `starting_after`; not `types[]`). It has no
prices, no credit notes and never answers 429; tests/fetching/fake_stripe.py covers those.
"""

import copy
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
import requests

from tests.conftest import free_port
from webhook_service.core.models import Invoice
from webhook_service.processing import drain
from webhook_service.processing.stripe_client import StripeClient

KEY = "sk_test_localstripe"


@pytest.fixture(scope="module")
def localstripe(tmp_path_factory):
    """A localstripe process on a free port, for this module."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "localstripe", "--port", str(port), "--from-scratch"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path_factory.mktemp("localstripe"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            requests.get(f"{url}/v1/customers", auth=(KEY, ""), timeout=1)
            break
        except requests.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("localstripe did not start") from None
            time.sleep(0.2)
    yield url
    proc.kill()
    proc.wait(10)


def post(url: str, path: str, **data) -> dict:
    response = requests.post(url + path, data=data, auth=(KEY, ""), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def invoice_of_fourteen(localstripe) -> dict:
    """An invoice of 14 lines (a subscription plus 13 pending invoice items), made through the API."""
    customer = post(localstripe, "/v1/customers", email="ls@example.com")
    post(localstripe, "/v1/plans", id="plan_ls", amount=5000, currency="usd", interval="month",
         **{"product[name]": "Seats"})  # fmt: skip
    for n in range(13):
        post(localstripe, "/v1/invoiceitems", customer=customer["id"], amount=100 + n, currency="usd")
    # localstripe creates the first invoice when the subscription starts (it then fails to charge
    # the customer without a card, which leaves the invoice as it is: open).
    requests.post(localstripe + "/v1/subscriptions", auth=(KEY, ""), timeout=10,
                  data={"customer": customer["id"], "items[0][plan]": "plan_ls"})  # fmt: skip
    listed = requests.get(localstripe + "/v1/invoices", params={"customer": customer["id"]},
                          auth=(KEY, ""), timeout=10).json()["data"]  # fmt: skip
    assert len(listed) == 1 and listed[0]["lines"]["has_more"] is True
    return listed[0]


def test_the_client_reads_invoices_lines_and_events_from_localstripe(localstripe, invoice_of_fourteen):
    client = StripeClient(KEY, localstripe)
    invoice = client.get(f"/v1/invoices/{invoice_of_fourteen['id']}")
    assert invoice["id"] == invoice_of_fourteen["id"] and len(invoice["lines"]["data"]) == 10
    lines = list(client.list_all(f"/v1/invoices/{invoice['id']}/lines"))
    assert len(lines) == invoice["lines"]["total_count"] == 14
    assert sum(line["amount"] for line in lines) == invoice["subtotal"]
    since = [("created[gte]", str(int(datetime(2020, 1, 1, tzinfo=UTC).timestamp())))]
    types = {event["type"] for event in client.list_all("/v1/events", since)}
    assert {"customer.created", "invoice.created"} <= types
    assert client.retrieve("/v1/invoices/in_doesnotexist") is None


@pytest.fixture
def config_overrides(localstripe):
    return {"stripe_api_key": KEY, "stripe_api_base": localstripe}


def test_the_worker_completes_a_truncated_invoice_from_localstripe(stripe, services, invoice_of_fourteen):
    """The webhook carries localstripe's own invoice (its first 10 lines); the drain pages the rest."""
    obj = copy.deepcopy(invoice_of_fourteen)
    event = {
        "id": "evt_1LocalStripeTruncated0", "object": "event", "api_version": "2017-08-15",
        "created": obj["date"], "type": "invoice.created", "livemode": False,
        "data": {"object": obj},
    }  # fmt: skip
    assert stripe.post(event).status_code == 200
    drain.drain(services.db, services.queue, 500, fetching=services.fetching)
    with services.db.sessions() as session:
        invoice = session.get(Invoice, obj["id"])
        assert invoice is not None and invoice.lines_complete is True
        assert len(invoice.lines) == 14 and sum(line.amount for line in invoice.lines) == obj["subtotal"]

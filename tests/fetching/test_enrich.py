"""The worker completes snapshots from Stripe's API before handlers run (a real HTTP fake, real DBs)."""

import copy

import pytest
import redis
import sqlalchemy as sa
from builder import NEW_API, Customer, CustomerHistory, Ids, InvoiceLifecycle, Line, credit_note, voided
from builder import credit_note_event as note_event

from tests.fetching.fake_stripe import FakeStripe
from tests.helpers import event_rows, run_worker
from webhook_service.core.models import CreditLedgerEntry, CreditNote, Invoice
from webhook_service.processing import attempts, drain

T = 1_795_200_000
KEY = "sk_test_fake"


@pytest.fixture
def fake():
    with FakeStripe() as server:
        server.put(
            "prices", {"id": "price_1Calls", "object": "price", "recurring": {"usage_type": "metered"}}
        )
        server.put(
            "prices", {"id": "price_1Seat", "object": "price", "recurring": {"usage_type": "licensed"}}
        )
        yield server


@pytest.fixture
def revalidate():
    return ()


@pytest.fixture
def config_overrides(fake, revalidate):
    return {"stripe_api_key": KEY, "stripe_api_base": fake.url, "stripe_revalidate": revalidate}


@pytest.fixture(autouse=True)
def _empty_price_cache(redis_url):
    redis.Redis.from_url(redis_url).flushdb()


def fifteen_lines(seed: str, **kwargs) -> InvoiceLifecycle:
    """12 seats (fixed fees) and 3 metered call lines: Stripe's payload carries only the first 10."""
    ids = Ids(seed)
    lines = [Line(ids.make("il"), f"Seat {n}", 1000 + n, price_id="price_1Seat") for n in range(12)]
    lines += [Line(ids.make("il"), f"Calls {n}", 500 + n, 10, "price_1Calls", metered=True) for n in range(3)]
    customer = Customer(ids.make("cus"), "Fetch Co", "fetch@example.com")
    return InvoiceLifecycle(ids, customer, NEW_API, T, lines, number=f"F-{seed}", **kwargs)


def truncated(event: dict) -> dict:
    event = copy.deepcopy(event)
    lines = event["data"]["object"]["lines"]
    lines["data"], lines["has_more"] = lines["data"][:10], True
    return event


def drain_all(services):
    return drain.drain(services.db, services.queue, 500, fetching=services.fetching)


def load(services, invoice_id) -> Invoice:
    with services.db.sessions() as session:
        invoice = session.get(Invoice, invoice_id)
        invoice.lines  # noqa: B018 - load while the session is open
        return invoice


def test_a_real_worker_pages_the_rest_of_the_lines_and_categorizes_them(app, stripe, services, fake):
    life = fifteen_lines("worker")
    event = life.finalized(T + 10)
    fake.put_invoice(event["data"]["object"])  # Stripe's own copy holds all 15 lines
    assert stripe.post(truncated(event)).status_code == 200
    assert fake.paths() == []  # the receiver never calls Stripe
    run_worker(app)
    invoice = load(services, life.id)
    assert invoice.lines_complete is True and len(invoice.lines) == 15
    assert sum(line.amount for line in invoice.lines) == invoice.subtotal
    categories = [line.category for line in invoice.lines]
    assert categories.count("usage") == 3 and categories.count("fixed_fee") == 12
    assert sorted(set(fake.paths())) == [
        "/v1/invoices/" + life.id + "/lines",
        "/v1/prices/price_1Calls",
        "/v1/prices/price_1Seat",
    ]
    sent = fake.state.requests[0].headers
    assert sent["Stripe-Version"] == NEW_API and sent["Authorization"] == f"Bearer {KEY}"


def test_prices_are_looked_up_once_for_every_worker(stripe, services, fake):
    for seed in ("cache-a", "cache-b"):
        life = fifteen_lines(seed)
        event = life.finalized(T + 10)
        fake.put_invoice(event["data"]["object"])
        stripe.post(truncated(event))
        drain_all(services)  # a new enricher per batch: the second invoice finds the price in Redis
    prices = [path for path in fake.paths() if path.startswith("/v1/prices/")]
    assert sorted(prices) == ["/v1/prices/price_1Calls", "/v1/prices/price_1Seat"]


def test_stale_events_fetch_nothing(stripe, services, fake):
    life = fifteen_lines("stale")
    finalized = life.finalized(T + 10)
    paid = life.paid(T + 20)[0]
    fake.put_invoice(paid["data"]["object"])
    stripe.post(truncated(paid))
    drain_all(services)
    before = len(fake.paths())
    stripe.post(truncated(finalized))  # older than what the row holds: its lines could never win
    drain_all(services)
    assert len(fake.paths()) == before and load(services, life.id).lines_complete is True


def test_credit_note_lines_are_paged_too(stripe, services, fake):
    life = fifteen_lines("note")
    stripe.post(life.finalized(T + 10))
    note = credit_note(Ids("note-cn"), life, T + 30, amount=1500, credit_type="pre_payment", number="CN-F")
    lines = [{"id": f"cnli_{n:02d}", "object": "credit_note_line_item", "amount": 100} for n in range(15)]
    note["lines"] = {"object": "list", "data": lines[:10], "has_more": True, "url": ""}
    fake.put_credit_note(note, lines)
    stripe.post(note_event(Ids("note-evt"), "credit_note.created", T + 30, note, NEW_API))
    drain_all(services)
    assert fake.paths().count(f"/v1/credit_notes/{note['id']}/lines") == 1


def test_a_failing_fetch_becomes_the_events_retry_and_the_rest_of_the_batch_goes_on(stripe, services, fake):
    broken, fine = fifteen_lines("broken"), fifteen_lines("fine")
    broken_event, fine_event = broken.finalized(T + 10), fine.finalized(T + 10)
    fake.put_invoice(broken_event["data"]["object"])
    fake.put_invoice(fine_event["data"]["object"])
    fake.fail(f"/v1/invoices/{broken.id}/lines", 503, times=3)
    stripe.post(truncated(broken_event))
    stripe.post(truncated(fine_event))
    result = drain_all(services)
    assert result.failed == [broken_event["id"]]
    rows = event_rows(services_app(services))
    assert rows[fine_event["id"]].status == "processed"
    assert rows[broken_event["id"]].status == "retrying" and "HTTP 503" in rows[broken_event["id"]].last_error
    assert load(services, fine.id).lines_complete is True
    # Stripe is back: the retry (a per-event job) completes the invoice.
    assert attempts.process_one(services.db, broken_event["id"], services.fetching) == "processed"
    assert load(services, broken.id).lines_complete is True and len(load(services, broken.id).lines) == 15


def test_a_same_second_tie_the_payloads_cannot_settle_is_fetched(stripe, services, fake):
    """Two invoice.updated in one second, neither recording the other's values: Stripe decides."""
    life = fifteen_lines("tie", collection_method="send_invoice")
    stripe.post(life.finalized(T + 10))
    first, second = life.updated(T + 60), life.updated(T + 60)
    first["data"]["object"]["amount_due"] = first["data"]["object"]["amount_remaining"] = 10000
    second["data"]["object"]["amount_due"] = second["data"]["object"]["amount_remaining"] = 9000
    first["data"]["previous_attributes"] = {"footer": "unrelated"}  # no evidence either way
    second["data"]["previous_attributes"] = {"footer": "unrelated too"}
    truth = copy.deepcopy(second["data"]["object"])
    truth["amount_due"] = truth["amount_remaining"] = 8000
    fake.put_invoice(truth)
    for event in (second, first):
        stripe.post(event)
    drain_all(services)
    invoice = load(services, life.id)
    assert invoice.amount_due == 8000
    assert fake.paths().count(f"/v1/invoices/{life.id}") >= 1


@pytest.mark.parametrize("revalidate", [("invoice", "credit_note")])
def test_revalidation_takes_the_fetched_object_but_skips_final_states(stripe, services, fake):
    life = fifteen_lines("reval")
    finalized = life.finalized(T + 10)
    truth = copy.deepcopy(finalized["data"]["object"])
    truth["hosted_invoice_url"] = "https://invoice.stripe.com/i/now"
    fake.put_invoice(truth)
    stripe.post(finalized)
    drain_all(services)
    assert load(services, life.id).hosted_invoice_url == "https://invoice.stripe.com/i/now"
    # The object, then the rest of its lines (Stripe embeds 10 of its 15), then each price once.
    assert fake.paths() == [
        f"/v1/invoices/{life.id}",
        f"/v1/invoices/{life.id}/lines",
        "/v1/prices/price_1Seat",
        "/v1/prices/price_1Calls",
    ]
    before = len(fake.paths())
    stripe.post(life.voided(T + 20))  # final: the payload is Stripe's last word
    note = credit_note(Ids("reval-cn"), life, T + 30, amount=100, credit_type="pre_payment", number="CN-R")
    stripe.post(note_event(Ids("reval-evt"), "credit_note.voided", T + 30, voided(note, T + 30), NEW_API))
    drain_all(services)
    assert len(fake.paths()) == before and load(services, life.id).status == "void"


def test_customers_tie_settled_by_evidence_needs_no_fetch(stripe, services, fake, app):
    ids = Ids("cust-tie")
    history = CustomerHistory(ids, Customer(ids.make("cus"), "Tie Co", "old@example.com"), NEW_API)
    created = history.created(T)
    credited = history.balance_changed(T + 5, -700)
    credited["data"]["previous_attributes"]["email"] = "old@example.com"
    credited["data"]["object"]["email"] = "new@example.com"
    stale = history.balance_changed(T + 5, 0)  # same second, the older snapshot: credit 0, old email
    stale["data"]["object"]["email"] = "old@example.com"
    stale["data"]["previous_attributes"] = {"metadata": {"x": "1"}}
    for event in (created, credited, stale):
        stripe.post(event)
    drain_all(services)
    from tests.helpers import mirror_state

    customer = dict(mirror_state(app)["customers"][0])
    assert (customer["credit_balance"], customer["email"]) == (700, "new@example.com")
    assert not any(path.startswith("/v1/customers") for path in fake.paths())


def test_a_tie_whose_fetch_finds_the_customer_deleted_keeps_the_events_own_snapshots(
    stripe, services, fake, app
):
    """Stripe answers a deleted customer with `{id, object, deleted}`. The tied events keep their
    own snapshots (ordered as without a key), the customer is marked deleted, and the order in
    which the two arrive changes nothing."""
    from tests.conftest import clean_tables
    from tests.helpers import mirror_state

    ids = Ids("gone-tie")
    customer = Customer(ids.make("cus"), "Gone Co", "gone@example.com")
    history = CustomerHistory(
        ids, customer, NEW_API, {"entity_type": "company", "portal_entity_id": "org_gone"}
    )
    more, less = history.balance_changed(T + 5, -700), history.balance_changed(T + 5, -300)
    for event in (more, less):
        event["data"]["previous_attributes"] = {"metadata": {"note": event["id"]}}  # no evidence
    fake.put("customers", {"id": customer.id, "object": "customer", "deleted": True})
    outcomes = []
    for order in ((more, less), (less, more)):
        clean_tables(services.db.engine)
        for event in order:
            stripe.post(event)
            drain_all(services)  # one at a time: each event's own fetch finds the customer gone
        row = dict(mirror_state(app)["customers"][0])
        assert (row["name"], row["entity_type"], row["entity_id"]) == ("Gone Co", "company", "org_gone")
        assert row["deleted_at"] is not None and row["credit_balance"] in (700, 300)
        outcomes.append(row["credit_balance"])
    assert outcomes[0] == outcomes[1]
    assert fake.paths().count(f"/v1/customers/{customer.id}") >= 2


def test_a_tie_whose_fetch_finds_the_draft_deleted_keeps_the_events_own_snapshots(stripe, services, fake):
    """The same for a draft invoice deleted since its tied updates: mirrored from the payloads,
    marked deleted, whatever the order."""
    from tests.conftest import clean_tables

    life = fifteen_lines("gone-draft")
    first, second = life.updated(T + 60), life.updated(T + 60)
    first["data"]["object"]["amount_due"] = first["data"]["object"]["amount_remaining"] = 10000
    second["data"]["object"]["amount_due"] = second["data"]["object"]["amount_remaining"] = 9000
    first["data"]["previous_attributes"] = {"footer": "unrelated"}  # no evidence either way
    second["data"]["previous_attributes"] = {"footer": "unrelated too"}
    fake.put("invoices", {"id": life.id, "object": "invoice", "deleted": True})
    outcomes = []
    for order in ((first, second), (second, first)):
        clean_tables(services.db.engine)
        for event in order:
            stripe.post(event)
            drain_all(services)
        invoice = load(services, life.id)
        assert (
            invoice.deleted_at is not None and invoice.stripe_status == "draft" and len(invoice.lines) == 15
        )
        assert invoice.amount_due in (10000, 9000)
        outcomes.append(invoice.amount_due)
    assert outcomes[0] == outcomes[1]
    assert fake.paths().count(f"/v1/invoices/{life.id}") >= 2


def services_app(services):
    class _App:
        extensions = {"webhook_service": services}

    return _App()


def test_a_finalized_invoice_whose_whole_list_is_mirrored_is_not_paged_again(stripe, services, fake):
    """Events of one invoice arriving one at a time: its lines are paged once, then kept."""
    life = fifteen_lines("trickle")
    finalized = life.finalized(T + 10)
    paid, succeeded = life.paid(T + 20)
    fake.put_invoice(paid["data"]["object"])
    for event in (finalized, paid, succeeded):
        stripe.post(truncated(event))
        drain_all(services)  # each event alone, as a live trickle drains them
    assert fake.paths().count(f"/v1/invoices/{life.id}/lines") == 1
    invoice = load(services, life.id)
    assert invoice.lines_complete is True and len(invoice.lines) == 15 and invoice.status == "paid"


def test_an_old_shape_note_that_refunds_and_credits_reads_its_balance_transaction(stripe, services, fake):
    """Before basil the note does not say how 50.00 split; its balance transaction does (-20.00)."""
    life = fifteen_lines("split")
    ids = Ids("split-cn")
    note = credit_note(
        ids, life, T + 30, amount=5000, credit_type="post_payment", to_balance=2000, refunded=3000,
        number="CN-S",
    )  # fmt: skip
    note.update({"refund": ids.make("re"), "customer_balance_transaction": ids.make("cbtxn")})
    for key in ("pre_payment_amount", "post_payment_amount", "refunds"):
        note.pop(key, None)
    customer = note["customer"]
    txn = {"id": note["customer_balance_transaction"], "object": "customer_balance_transaction",
           "amount": -2000, "currency": "usd", "customer": customer, "type": "credit_note"}  # fmt: skip
    fake.put(f"customers/{customer}/balance_transactions", txn)
    stripe.post(note_event(ids, "credit_note.created", T + 30, note, "2020-08-27"))
    drain_all(services)
    assert fake.paths().count(f"/v1/customers/{customer}/balance_transactions/{txn['id']}") == 1
    with services.db.sessions() as session:
        row = session.get(CreditNote, note["id"])
        assert (row.credited_to_balance, row.refunded_amount) == (2000, 3000)
        ledger = session.scalars(sa.select(CreditLedgerEntry).filter_by(customer_id=customer)).all()
        assert [(e.kind, e.amount, e.at_most) for e in ledger] == [("credit_note", 2000, None)]

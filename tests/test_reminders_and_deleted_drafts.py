"""`invoice.will_be_due`, `invoice.overdue` and `invoice.deleted` of drafts, through the receiver and
a real drain (SPEC.md, "Past due"; docs/design.md): a reminder is a snapshot, not a status; overdue
is past due once; a deleted draft leaves the portal's lists but keeps its row."""

import itertools

import pytest
from builder import NEW_API, OLD_API, Customer, Ids, InvoiceLifecycle, Line

from tests.helpers import event_rows
from tests.test_past_due import DAY, T, notifications, trail
from webhook_service.core.models import EventStatus
from webhook_service.processing import drain

KEY = "portal-key-reminders-0123456789"
DORA = Customer("cus_1DoraDesigns0000000000", "Dora Designs", "dora@example.com")


@pytest.fixture
def config_overrides():
    return {"portal_api_keys": (KEY,)}


def get(client, path):
    return client.get(f"/api/v1{path}", headers={"Authorization": f"Bearer {KEY}"})


def send_invoice(seed: str, api: str = NEW_API) -> InvoiceLifecycle:
    ids = Ids(f"reminders-{seed}-{api}")
    lines = [Line(ids.make("il"), "Design work", 42000, price_id="price_1D", product_id="prod_1D")]
    return InvoiceLifecycle(
        ids, DORA, api, T, lines, number=f"DORA-{seed}", collection_method="send_invoice", days_until_due=10
    )


def deliver(stripe, services, events) -> None:
    for event in events:
        assert stripe.post(event).status_code == 200
    drain.drain(services.db, services.queue, 500)


def statuses(app) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in event_rows(app).values():
        counts[row.status] = counts.get(row.status, 0) + 1
    return counts


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_will_be_due_is_a_snapshot_that_never_makes_an_invoice_past_due(app, stripe, services, client, order):
    life = send_invoice("will-be-due")
    due = T + 60 + 10 * DAY
    events = [life.created(T), life.finalized(T + 60), life._emit("invoice.will_be_due", due - 3 * DAY)]
    deliver(stripe, services, [events[i] for i in order])
    assert statuses(app) == {EventStatus.PROCESSED.value: 3}
    invoice = get(client, f"/invoices/{life.id}").get_json()
    assert (invoice["status"], invoice["amount_remaining"]) == ("open", 42000)
    assert [(f, t) for f, t, _, _ in trail(services, life.id)] == [(None, "draft"), ("draft", "open")]
    assert notifications(services, life.id) == []


@pytest.mark.parametrize("api", [OLD_API, NEW_API])
def test_overdue_after_will_be_due_is_one_past_due_episode_whatever_the_redeliveries(stripe, services, api):
    life = send_invoice("overdue", api)
    due = T + 60 + 10 * DAY
    created, finalized = life.created(T), life.finalized(T + 60)
    reminder = life._emit("invoice.will_be_due", due - 3 * DAY)
    overdue = life.overdue(due + DAY)
    deliver(stripe, services, [overdue, created, reminder, finalized, overdue, reminder])
    assert trail(services, life.id)[-1] == ("open", "past_due", due, overdue["id"])
    assert [(n.audience, n.kind) for n in notifications(services, life.id)] == [
        ("admins", "invoice_past_due"),
        ("customer", "invoice_past_due"),
    ]


@pytest.mark.parametrize("deleted_first", [False, True])
def test_a_deleted_draft_leaves_the_lists_and_keeps_its_row(app, stripe, services, client, deleted_first):
    life = send_invoice(f"deleted-{deleted_first}")
    created, edited = life.created(T), life.updated(T + 20, description="edited")
    deleted = life._emit("invoice.deleted", T + 30)
    late_edit = dict(edited, id=Ids("reminders-late").make("evt"), created=T + 25)
    deliver(
        stripe, services, [deleted, created, late_edit] if deleted_first else [created, late_edit, deleted]
    )
    assert statuses(app) == {EventStatus.PROCESSED.value: 3}
    assert get(client, "/invoices").get_json()["total"] == 0
    invoice = get(client, f"/invoices/{life.id}").get_json()
    assert invoice["deleted_at"] is not None and invoice["status"] == "draft"


def test_a_deleted_draft_whose_payload_is_only_its_id_is_processed(app, stripe, services, client):
    """Stripe's DELETE answer shape ({id, object, deleted: true}) as an event's object: nothing to
    mirror but the deletion, and no field to fail on."""
    life = send_invoice("deleted-bare")
    deleted = life._emit("invoice.deleted", T + 30)
    deleted["data"]["object"] = {"id": life.id, "object": "invoice", "deleted": True}
    deliver(stripe, services, [life.created(T), deleted])
    assert statuses(app) == {EventStatus.PROCESSED.value: 2}
    invoice = get(client, f"/invoices/{life.id}").get_json()
    assert invoice["deleted_at"] is not None and invoice["total"] == 42000

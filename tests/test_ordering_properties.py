"""Final state depends only on the set of events: any order, duplicates, copies, replays, batching.

Hypothesis permutes realistic invoice lifecycles (both API shapes, two customers) and compares
the mirror with the one in-order delivery produces, on PostgreSQL and on SQLite.
"""

import copy
import json

import sqlalchemy as sa
from builder import (
    NEW_API,
    OLD_API,
    Customer,
    CustomerHistory,
    Ids,
    InvoiceLifecycle,
    Line,
    credit_note,
    credit_note_event,
    voided,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import clean_tables
from tests.helpers import examples, mirror_state
from webhook_service.core.models import StripeEvent
from webhook_service.processing import drain, eventlog
from webhook_service.processing.envelope import parse_envelope

T = 1_795_000_000


def lifecycles() -> list[dict]:
    """The issues' lifecycles (invoices, credit notes, customers), each event in true order."""
    ids = Ids("properties")
    a = Customer("cus_1PropA00000000000000000", "Prop A", "a@example.com")
    b = Customer("cus_1PropB00000000000000000", "Prop B", "b@example.com")

    def new(customer, api, at, **kw):
        lines = [
            Line(ids.make("il"), "Plan", 7000, price_id="price_1P", product_id="prod_1P"),
            Line(ids.make("il"), "Calls", 1234, 1234, "price_1U", "prod_1U", metered=True),
        ]
        return InvoiceLifecycle(ids, customer, api, at, lines, number=f"P-{at}", tax_percent=5, **kw)

    events: list[dict] = []
    ca = CustomerHistory(ids, a, NEW_API, {"entity_type": "company", "portal_entity_id": "org_a"})
    cb = CustomerHistory(ids, b, NEW_API)
    events += [ca.created(T - 1000), cb.created(T - 900)]
    x = new(a, OLD_API, T)  # draft → open → paid, then a credit note credited to the balance
    events += [x.created(T), x.finalized(T + 10), *x.paid(T + 20)]
    note = credit_note(
        ids, x, T + 30, amount=1500, credit_type="post_payment", to_balance=1500, number="P-CN-1"
    )
    events += [
        credit_note_event(ids, "credit_note.created", T + 30, note, OLD_API),
        x.credit_noted(T + 30, post=1500),
        ca.balance_changed(T + 30, -1500),
    ]
    y = new(a, NEW_API, T + 900, starting_balance=-1500)  # the credit is applied at finalization
    events += [y.created(T + 900), y.finalized(T + 910), ca.balance_changed(T + 911, 0)]
    wrong = credit_note(
        ids, y, T + 920, amount=300, credit_type="post_payment", to_balance=300, number="P-CN-2"
    )
    events += [
        credit_note_event(ids, "credit_note.created", T + 920, wrong, NEW_API),
        ca.balance_changed(T + 921, -300),
        credit_note_event(ids, "credit_note.voided", T + 930, voided(wrong, T + 930), NEW_API),
        ca.balance_changed(T + 931, 0),
    ]
    events += [cb.balance_changed(T + 950, -800)]  # a manual adjustment: no other event
    x = new(a, NEW_API, T + 100)  # open → payment_failed → paid, failure in the finalization second
    events += [x.created(T + 100), x.finalized(T + 110), x.payment_failed(T + 110), *x.paid(T + 200)]
    x = new(b, OLD_API, T + 300, collection_method="send_invoice")  # open → uncollectible → paid
    events += [
        x.created(T + 300),
        x.finalized(T + 310),
        x.marked_uncollectible(T + 400),
        *x.paid(T + 500, True),
    ]
    x = new(b, NEW_API, T + 600, collection_method="send_invoice")  # open → overdue (past due) → void
    events += [x.created(T + 600), x.finalized(T + 610), x.overdue(T + 650), x.voided(T + 700)]
    x = new(a, NEW_API, T + 800)  # draft edited in its creation second, amounts change, then paid
    events += [
        x.created(T + 800),
        x.updated(
            T + 800,
            add_line=Line(
                ids.make("il"), "Setup", 2500, 1, "price_1S", "prod_1S", invoice_item=ids.make("ii")
            ),
        ),
        x.finalized(T + 810),
        *x.paid(T + 810),
    ]
    events += same_second_ties(ids, a, b, new)
    return events


def same_second_ties(ids, a, b, new) -> list[dict]:
    """Snapshots of one object within one second, which `created` cannot order (issue 13).

    Three credit notes lower an invoice's amount_due in one second, each invoice.updated recording
    the previous one's values; a customer's credit grows twice in one second; and two edits of a
    draft in one second that record nothing about each other (no evidence: still order-free).
    """
    z = new(b, NEW_API, T + 1000, collection_method="send_invoice")
    events = [z.created(T + 1000), z.finalized(T + 1010)]
    events += [z.credit_noted(T + 1020, pre=1000), z.credit_noted(T + 1020, pre=2000)]
    events += [z.credit_noted(T + 1020, pre=500)]
    cb = CustomerHistory(ids, b, NEW_API)
    cb.balance = -800
    events += [cb.balance_changed(T + 1030, -300), cb.balance_changed(T + 1030, -700)]
    w = new(a, NEW_API, T + 1100)
    first, second = w.updated(T + 1105, number="W-1"), w.updated(T + 1105, number="W-2")
    first["data"]["previous_attributes"] = {"footer": None}
    second["data"]["previous_attributes"] = {"footer": "a footer"}
    return events + [w.created(T + 1100), first, second]


EVENTS = lifecycles()


def _copy_of(event: dict, n: int) -> dict:
    """Stripe sometimes sends two Event objects for one change: same object, new event id."""
    twin = copy.deepcopy(event)
    twin["id"] = f"{event['id']}c{n}"
    return twin


def _deliver(services, event: dict) -> None:
    body = json.dumps(event).encode()
    eventlog.record_event(services.db.engine, parse_envelope(body), body)


def _run(services, deliveries: list[dict], drain_after: list[bool], batch_size: int, replay: list[int]):
    clean_tables(services.db.engine)
    for event, drain_now in zip(deliveries, drain_after + [False] * len(deliveries), strict=False):
        _deliver(services, event)
        if drain_now:
            drain.drain(services.db, services.queue, batch_size)
    drain.drain(services.db, services.queue, batch_size)
    if replay:  # an operator replays already processed events: nothing may change
        ids = sorted({deliveries[i % len(deliveries)]["id"] for i in replay})
        with services.db.sessions() as session, session.begin():
            session.execute(sa.update(StripeEvent).where(StripeEvent.id.in_(ids)).values(status="queued"))
        drain.drain(services.db, services.queue, batch_size)
    assert drain.pending_count(services.db) == 0


#: The in-order mirror of each set of copies, per database (see the test below).
_REFERENCES: dict[tuple[str, tuple[int, ...]], dict] = {}


@settings(
    max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    order=st.permutations(range(len(EVENTS))),
    redelivered=st.lists(st.integers(0, len(EVENTS) - 1), max_size=12),
    copied=st.lists(st.integers(0, len(EVENTS) - 1), max_size=4, unique=True),
    drain_after=st.lists(st.booleans(), max_size=len(EVENTS) + 16),
    batch_size=st.integers(1, 9),
    replay=st.lists(st.integers(0, 200), max_size=6),
)
def test_any_delivery_order_ends_in_the_in_order_state(
    services, order, redelivered, copied, drain_after, batch_size, replay
):
    twins = {i: _copy_of(EVENTS[i], n) for n, i in enumerate(copied)}
    # Reference: true order, each copy right after its original, one event per transaction. It
    # depends only on the copies (and the backend), so examples that draw the same ones share it.
    key = (services.db.engine.url.render_as_string(), tuple(copied))
    if key not in _REFERENCES:
        in_order = [e for i, e in enumerate(EVENTS) for e in ([e, twins[i]] if i in twins else [e])]
        _run(services, in_order, [], 1, [])
        _REFERENCES[key] = mirror_state(services_app(services))
    expected = _REFERENCES[key]
    # Under test: shuffled, redelivered, copies anywhere, drains interleaved, then replays.
    shuffled = [EVENTS[i] for i in order] + [EVENTS[i] for i in redelivered] + list(twins.values())
    shuffled = [shuffled[i] for i in _interleave(order, len(shuffled))]
    _run(services, shuffled, drain_after, batch_size, replay)
    assert mirror_state(services_app(services)) == expected


def _interleave(order, n):
    """A deterministic reshuffle driven by the drawn permutation, so redeliveries land anywhere."""
    keys = [(order[i % len(order)] * 7919 + i * 104729) % 1000003 for i in range(n)]
    return sorted(range(n), key=keys.__getitem__)


def services_app(services):
    return _App(services)


class _App:
    """mirror_state takes an app; this carries the services it needs."""

    def __init__(self, services):
        self.extensions = {"webhook_service": services}


def test_reference_run_has_every_lifecycle_in_its_final_status(services):
    _run(services, EVENTS, [], 1, [])
    statuses = sorted(row[3][1] for row in mirror_state(services_app(services))["invoices"])
    assert statuses == ["draft", "open", "open", "paid", "paid", "paid", "paid", "void"]


def test_same_second_snapshots_end_in_the_newest_by_evidence(services):
    """The in-order reference itself is right: the last credit note's amounts, the larger credit."""
    _run(services, list(reversed(EVENTS)), [], 500, [])
    state = mirror_state(services_app(services))
    due = {dict(row)["number"]: dict(row)["amount_due"] for row in state["invoices"]}
    z_events = [e for e in EVENTS if e["created"] == T + 1020]
    assert due[z_events[-1]["data"]["object"]["number"]] == z_events[-1]["data"]["object"]["amount_due"]
    credits = {dict(row)["id"]: dict(row)["credit_balance"] for row in state["customers"]}
    assert credits["cus_1PropB00000000000000000"] == 700

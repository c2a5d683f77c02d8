"""A batch costs a fixed number of statements, whatever its events: no statement per event.

Replay runs at the drains' speed (processing/replay.py), so per-event round trips are what would
make 10,000 replayed events slow (docs/benchmarks.md). Each backlog below has a same-second tie
for every invoice (paid and payment_succeeded in one second: the tie is read from the event log)
and a failed payment, hence past-due notifications, for every third one.
"""

from __future__ import annotations

import orjson
import pytest
import sqlalchemy as sa
from builder import NEW_API, Customer, Ids, InvoiceLifecycle, Line

import handlers
from tests.helpers import event_rows, invoices_by_number
from webhook_service.core.models import Notification, StripeEvent
from webhook_service.processing import drain, eventlog
from webhook_service.processing.envelope import parse_envelope
from webhook_service.web.services import get_services

T0 = 1_790_000_000


def _backlog(invoices: int, tag: str) -> list[dict]:
    ids = Ids(f"drain-statements-{tag}")
    customers = [Customer(ids.make("cus"), f"Customer {i}", f"c{i}@example.com") for i in range(3)]
    events: list[dict] = []
    for i in range(invoices):
        line = Line(ids.make("il"), "Plan", 4900, price_id="price_1B", product_id="prod_1B")
        life = InvoiceLifecycle(ids, customers[i % 3], NEW_API, T0 + i, [line], number=f"S{tag}-{i:04d}")
        life.created(T0 + i)
        life.finalized(T0 + i + 3600)
        if i % 3 == 0:
            life.payment_failed(T0 + i + 3600 + 5)
        life.paid(T0 + i + 7200)
        events += life.events
    return events


def _record(services, events: list[dict]) -> None:
    """Log the events as the receiver would, queued for a drain."""
    bodies = [orjson.dumps(event) for event in events]
    eventlog.record_events(services.db.engine, [(parse_envelope(body), body) for body in bodies])


def _failing(event, session):
    raise RuntimeError("handler bug")


def _statements_of_one_drain(services, events: list[dict]) -> list[str]:
    _record(services, events)
    statements: list[str] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    engine = services.db.engine
    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        result = drain.drain(services.db, services.queue, batch_size=500)
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    assert (result.processed, result.batches, result.failed) == (len(events), 1, [])
    return statements


def _fixed(statements: list[str]) -> list[str]:
    return [s for s in statements if not s.startswith("INSERT INTO notifications")]


@pytest.mark.parametrize("invoices", [6, 30])
def test_a_batch_costs_the_same_statements_for_6_or_30_invoices(pg_app, invoices):
    app, services = pg_app, get_services(pg_app)
    # GIVEN a baseline of 3 invoices drained alone, to compare with
    small = _statements_of_one_drain(services, _backlog(3, f"base{invoices}"))
    # WHEN a batch of `invoices` lifecycles is drained, ties and notifications included
    events = _backlog(invoices, str(invoices))
    big = _statements_of_one_drain(services, events)
    # THEN it sent no more statements than the 3-invoice batch, but for one INSERT per invoice that
    # entered past due (its notifications), and it read the event log once for all its ties
    assert len(_fixed(big)) <= len(_fixed(small)), "\n".join(big)
    assert len(big) - len(_fixed(big)) == (invoices + 2) // 3
    assert len([s for s in big if "stripe_events.payload" in s and " LIKE " in s]) == 1
    # AND the mirror is what it always was: every invoice paid, one notification per audience
    numbers = {e["data"]["object"]["number"] for e in events} - {None}
    statuses = {n: i.status for n, i in invoices_by_number(app).items() if n in numbers}
    assert statuses == dict.fromkeys(numbers, "paid")
    with services.db.sessions() as session:
        notified = session.scalars(
            sa.select(Notification.invoice_id).where(Notification.invoice_id.like("in_%"))
        ).all()
        assert len(notified) == 2 * ((invoices + 2) // 3 + 1)  # admins and customer, per failed payment
        assert session.scalar(sa.select(sa.func.count()).where(StripeEvent.status != "processed")) == 0


def test_a_failing_type_is_tried_alone_and_the_rest_of_the_batch_commits_together(pg_app, monkeypatch):
    """A bad deploy breaks one event type: a backlog must not fall back to a transaction per event."""
    services = get_services(pg_app)
    # GIVEN a backlog of 12 lifecycles (40 events) and a handler that fails for one type
    events = _backlog(12, "broken")
    broken = sorted(e["id"] for e in events if e["type"] == "invoice.payment_failed")

    monkeypatch.setitem(handlers.EVENT_HANDLERS, "invoice.payment_failed", _failing)
    _record(services, events)
    commits: list[object] = []

    def count(conn):
        commits.append(conn)

    # WHEN one drain takes the whole backlog as one batch
    sa.event.listen(services.db.engine, "commit", count)
    try:
        result = drain.drain(services.db, services.queue, batch_size=500)
    finally:
        sa.event.remove(services.db.engine, "commit", count)
    # THEN only the failing type went one by one, each retrying with its reason
    rows = event_rows(pg_app)
    assert len(broken) == 4 and sorted(result.failed) == broken
    assert {rows[i].status for i in broken} == {"retrying"}
    assert all("handler bug" in (rows[i].last_error or "") for i in broken)
    # AND every other event was processed, together: a transaction per event would be 40 commits
    assert {row.status for i, row in rows.items() if i not in broken} == {"processed"}
    assert result.processed == len(events) - len(broken)
    assert result.batches == 2  # the failed batch, then the rest together
    assert len(commits) <= 3 * len(broken) + 2, len(commits)


def test_batches_failing_in_a_row_fall_back_to_one_by_one_and_lose_nothing(pg_app, monkeypatch):
    """Four broken types: three failed batches set one type aside each, the fourth goes one by one."""
    services = get_services(pg_app)
    events = _backlog(6, "four")
    kinds = sorted({e["type"] for e in events})
    working = "invoice.payment_succeeded"
    assert working in kinds and len(kinds) == 5

    for kind in kinds:
        if kind != working:
            monkeypatch.setitem(handlers.EVENT_HANDLERS, kind, _failing)
    _record(services, events)
    result = drain.drain(services.db, services.queue, batch_size=500)
    rows = event_rows(pg_app)
    broken = sorted(e["id"] for e in events if e["type"] != working)
    assert result.batches == 4 and sorted(result.failed) == broken
    assert {rows[i].status for i in broken} == {"retrying"}
    assert {rows[e["id"]].status for e in events if e["type"] == working} == {"processed"}

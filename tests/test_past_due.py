"""Past due: detection, the daily sweep and notifications, with controlled time, on each database."""

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import time_machine
from builder import NEW_API, Customer, Ids, InvoiceLifecycle, Line

from tests.conftest import clean_tables
from tests.handlers.test_invoices import apply, load_invoice
from webhook_service.core.models import Notification, NotificationPreference
from webhook_service.processing import attempts, drain, eventlog
from webhook_service.processing.envelope import parse_envelope
from webhook_service.processing.sweep import sweep_past_due

T = 1_794_000_000  # 2026-11-05T20:00:00Z
DAY = 86400
BOB = Customer("cus_1BobBuilders000000000000", "Bob Builders", "bob@example.com")


def at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def send_invoice(seed="a", days_until_due=10, customer=BOB):
    ids = Ids(f"past-due-{seed}")
    lines = [Line(ids.make("il"), "Consulting", 30000, price_id="price_1C", product_id="prod_1C")]
    return InvoiceLifecycle(
        ids, customer, NEW_API, T, lines, number=f"PD-{seed}", collection_method="send_invoice",
        days_until_due=days_until_due,
    )  # fmt: skip


def trail(services, invoice_id):
    inv = load_invoice(services, invoice_id)
    return [(h.from_status, h.to_status, int(h.at.timestamp()), h.event_id) for h in inv.status_history]


def notifications(services, invoice_id=None):
    with services.db.sessions() as session:
        stmt = sa.select(Notification).order_by(Notification.invoice_id, Notification.audience)
        if invoice_id:
            stmt = stmt.where(Notification.invoice_id == invoice_id)
        return list(session.scalars(stmt))


def test_due_date_passing_without_any_event_is_caught_by_the_sweep(services):
    life = send_invoice()
    apply(services, [life.created(T), life.finalized(T + 60)])
    due = T + 60 + 10 * DAY
    with time_machine.travel(at(due - 3600), tick=False):
        assert sweep_past_due(services.db) == 0
    assert load_invoice(services, life.id).status == "open"
    with time_machine.travel(at(due + 7 * 3600), tick=False):
        assert sweep_past_due(services.db) == 1
        assert sweep_past_due(services.db) == 0  # a second run finds nothing new
    assert load_invoice(services, life.id).status == "past_due"
    assert trail(services, life.id)[-1] == ("open", "past_due", due, None)
    notes = notifications(services, life.id)
    assert [(n.audience, n.kind) for n in notes] == [
        ("admins", "invoice_past_due"),
        ("customer", "invoice_past_due"),
    ]
    customer_note = notes[1]
    assert (customer_note.customer_id, customer_note.amount_remaining, customer_note.currency) == (
        BOB.id,
        30000,
        "usd",
    )
    assert int(customer_note.due_date.timestamp()) == due and customer_note.days_past_due == 0
    assert int(customer_note.created_at.timestamp()) == due
    assert (
        customer_note.delivered_at is None
        and customer_note.read_at is None
        and customer_note.channels == "email"
    )


def test_payment_failure_then_success_is_one_episode_with_entry_and_exit(services):
    ids = Ids("pd-charge")
    lines = [Line(ids.make("il"), "Plan", 9900, price_id="p", product_id="q")]
    life = InvoiceLifecycle(ids, BOB, NEW_API, T, lines, number="PD-charge")
    events = [
        life.created(T),
        life.finalized(T + 3600),
        life.payment_failed(T + 3700),
        *life.paid(T + 3 * DAY),
    ]
    apply(services, events * 2)  # duplicates
    assert [(f, t) for f, t, _, _ in trail(services, life.id)] == [
        (None, "draft"), ("draft", "open"), ("open", "past_due"), ("past_due", "paid"),
    ]  # fmt: skip
    assert trail(services, life.id)[2][2:] == (T + 3700, events[2]["id"])
    assert load_invoice(services, life.id).status == "paid"
    notes = notifications(services, life.id)
    assert len(notes) == 2 and {n.days_past_due for n in notes} == {None}  # charge_automatically: no due date
    assert {n.amount_remaining for n in notes} == {9900}


@pytest.mark.parametrize("order", ["overdue_then_sweep", "sweep_then_overdue", "interleaved"])
def test_overdue_event_before_during_or_after_the_sweep_ends_the_same(services, order):
    life = send_invoice()
    created, finalized = life.created(T), life.finalized(T + 60)
    due = T + 60 + 10 * DAY
    overdue = life.overdue(due + DAY)
    apply(services, [created, finalized])
    with time_machine.travel(at(due + 2 * DAY), tick=False):
        if order == "overdue_then_sweep":
            apply(services, [overdue])
            assert sweep_past_due(services.db) == 0
        elif order == "sweep_then_overdue":
            assert sweep_past_due(services.db) == 1
            apply(services, [overdue])
        else:  # the sweep and the event race on the same invoice
            barrier = threading.Barrier(2)

            def sweep():
                barrier.wait()
                sweep_past_due(services.db)

            def deliver():
                barrier.wait()
                apply(services, [overdue])

            threads = [threading.Thread(target=sweep), threading.Thread(target=deliver)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
    # Whichever came first: past due from the due date, shown by the overdue event, two notifications.
    assert trail(services, life.id)[-1] == ("open", "past_due", due, overdue["id"])
    notes = notifications(services, life.id)
    assert len(notes) == 2 and {int(n.created_at.timestamp()) for n in notes} == {due}


def test_late_paid_webhook_withdraws_a_sweep_made_episode(services):
    life = send_invoice()
    events = [life.created(T), life.finalized(T + 60)]
    due = T + 60 + 10 * DAY
    paid, _ = life.paid(due - DAY)  # paid on time, but its webhook is delayed past the sweep
    apply(services, events)
    with time_machine.travel(at(due + DAY), tick=False):
        assert sweep_past_due(services.db) == 1
    assert len(notifications(services, life.id)) == 2
    apply(services, [paid])
    assert load_invoice(services, life.id).status == "paid"
    assert [t for _, t, _, _ in trail(services, life.id)] == ["draft", "open", "paid"]
    assert notifications(services, life.id) == []


def test_customer_opt_out_and_channels(services):
    carol = Customer("cus_1CarolOptsOut00000000000", "Carol", "carol@example.com")
    dave = Customer("cus_1DaveSmsAndMail000000000", "Dave", "dave@example.com")
    with services.db.sessions() as session, session.begin():
        session.add(NotificationPreference(customer_id=carol.id, past_due=False, channels="email"))
        session.add(NotificationPreference(customer_id=dave.id, past_due=True, channels="email,sms"))
    for seed, customer in (("c", carol), ("d", dave)):
        life = send_invoice(seed, customer=customer)
        apply(services, [life.created(T), life.finalized(T + 60), life.overdue(T + 60 + 11 * DAY)])
    by_customer = {}
    for note in notifications(services):
        by_customer.setdefault(note.customer_id, []).append((note.audience, note.channels))
    assert by_customer[carol.id] == [("admins", "email")]
    assert by_customer[dave.id] == [("admins", "email"), ("customer", "email,sms")]


def test_a_later_episode_gets_its_own_notifications(services):
    first, second = send_invoice("first"), send_invoice("second")
    apply(
        services,
        [first.created(T), first.finalized(T + 60), first.overdue(T + 11 * DAY), *first.paid(T + 12 * DAY)],
    )
    apply(services, [second.created(T), second.finalized(T + 60), second.overdue(T + 11 * DAY)])
    assert len(notifications(services, first.id)) == 2 and len(notifications(services, second.id)) == 2


def _log_and_queue(services, events):
    for event in events:
        body = json.dumps(event).encode()
        eventlog.record_event(services.db.engine, parse_envelope(body), body)


def test_duplicates_replays_sweeps_and_racing_workers_write_one_notification_per_audience(services):
    life = send_invoice()
    created, finalized = life.created(T), life.finalized(T + 60)
    failed_like = [life.overdue(T + 11 * DAY), life.updated(T + 12 * DAY, description="reminder sent")]
    _log_and_queue(services, [created, finalized])
    drain.drain(services.db, services.queue, 10)
    _log_and_queue(services, failed_like)
    # Two workers race on the same invoice: each processes one of its events at the same moment.
    barrier = threading.Barrier(2)
    errors = []

    def work(event_id):
        barrier.wait()
        try:
            attempts.process_one(services.db, event_id)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(e["id"],)) for e in failed_like]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    # Replays and more sweeps change nothing.
    for event in failed_like:
        with services.db.sessions() as session, session.begin():
            session.execute(
                sa.text("UPDATE stripe_events SET status = 'queued' WHERE id = :id"), {"id": event["id"]}
            )
    drain.drain(services.db, services.queue, 1)
    with time_machine.travel(at(T + 20 * DAY), tick=False):
        sweep_past_due(services.db)
        sweep_past_due(services.db)
    assert [n.audience for n in notifications(services, life.id)] == ["admins", "customer"]
    assert [t for _, t, _, _ in trail(services, life.id)].count("past_due") == 1


def test_the_unique_key_refuses_a_second_notification(services):
    life = send_invoice()
    apply(services, [life.created(T), life.finalized(T + 60), life.overdue(T + 11 * DAY)])
    note = notifications(services, life.id)[0]
    with pytest.raises(sa.exc.IntegrityError), services.db.sessions() as session, session.begin():
        session.add(Notification(kind=note.kind, audience=note.audience, invoice_id=note.invoice_id,
                                 channels="email", created_at=note.created_at))  # fmt: skip


def test_sweep_is_batched_and_skips_what_is_not_due(services):
    lives = [send_invoice(f"batch{i}", days_until_due=1 + i % 3) for i in range(25)]
    for life in lives:
        apply(services, [life.created(T), life.finalized(T + 60)])
    with time_machine.travel(at(T + 60 + 2 * DAY + 1), tick=False):
        moved = sweep_past_due(services.db, batch_size=4)
    due_by_then = sum(1 for i in range(25) if 1 + i % 3 <= 2)
    assert moved == due_by_then
    statuses = [load_invoice(services, life.id).status for life in lives]
    assert statuses.count("past_due") == due_by_then and statuses.count("open") == 25 - due_by_then


def test_sweep_query_uses_the_status_due_date_index(postgresql_database_url):
    """PostgreSQL's plan for the sweep's query (SQLite, the embedded default, runs the same query)."""
    engine = sa.create_engine(postgresql_database_url)
    with engine.connect() as conn:
        conn.execute(sa.text("TRUNCATE invoices CASCADE"))  # empty, never analyzed; rolled back on exit
        conn.execute(sa.text("SET enable_seqscan = off"))  # tiny tables would otherwise be scanned
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                sa.text(
                    "EXPLAIN SELECT id FROM invoices WHERE status = 'open' AND due_date < now() "
                    "AND deleted_at IS NULL ORDER BY id LIMIT 1000"
                )
            )
        )
    engine.dispose()
    assert "ix_invoices_status_due" in plan, plan


def test_sweep_cli_reports_what_it_moved(services, database_url, redis_url):
    from click.testing import CliRunner

    from webhook_service.cli import cli

    clean_tables(services.db.engine)
    life = send_invoice()
    apply(services, [life.created(T), life.finalized(T + 60)])
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "LOG_LEVEL": "WARNING"}
    with time_machine.travel(at(T + 30 * DAY), tick=False):
        first = CliRunner().invoke(cli, ["sweep-past-due"], env=env, catch_exceptions=False)
        again = CliRunner().invoke(cli, ["sweep-past-due"], env=env, catch_exceptions=False)
    assert first.exit_code == 0 and "Moved 1 invoices to past due." in first.output
    assert "Nothing to do" in again.output


def test_sweep_time_is_configurable():
    from webhook_service.core.config import load_config
    from webhook_service.core.errors import ConfigError

    assert load_config({"PAST_DUE_SWEEP_TIME": "23:45"}).sweep_time_utc == "23:45"
    with pytest.raises(ConfigError, match="PAST_DUE_SWEEP_TIME"):
        load_config({"PAST_DUE_SWEEP_TIME": "25:00"})


def test_notification_due_date_arithmetic():
    from handlers.past_due import days_past_due

    due = at(T)
    assert days_past_due(due, due + timedelta(days=3, hours=5)) == 3
    assert days_past_due(due, due - timedelta(days=1)) == 0
    assert days_past_due(None, due) is None

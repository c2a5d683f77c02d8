"""Accepted events become mirror rows through real RQ workers; acknowledged means kept."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta

import pytest
import redis
import sqlalchemy as sa
from rq.registry import FailedJobRegistry

import handlers
from tests.conftest import SECRET, StripeSender, _clean, make_config
from tests.drills.stack import report
from tests.helpers import event_rows, invoices_by_number, mirror_state, run_worker
from webhook_service.core.models import InvoiceStatusChange, StripeEvent
from webhook_service.processing import attempts, drain, eventlog, locks, recovery
from webhook_service.web.app import create_app
from webhook_service.web.services import get_services

pytestmark = pytest.mark.pgbouncer

EXPECTED_STATUSES = {
    "ACME-0001": "paid",
    "GLOBEX-0001": "void",
    "UMBRELLA-0001": "open",  # past its due date, but only the sweep says so
    "ACME-0013": "paid",
    "GLOBEX-0007": "uncollectible",
    "INITECH-0001": "open",
    "HOOLI-0001": "past_due",
}
#: draft, open, paid | draft, open, void | draft, open | draft, open, past_due, paid |
#: draft, open, uncollectible | draft, open | draft, open, past_due
EXPECTED_HISTORY_ROWS = 20


def _deliver_all(stripe, events):
    for event in events:
        assert stripe.post(event).status_code == 200


def test_fixtures_are_mirrored_by_a_forking_worker(app, stripe, fixture_events):
    # GIVEN every fixture delivered in reverse order (newest first)
    _deliver_all(stripe, reversed(fixture_events))
    # WHEN the production worker class (fork per job) drains the queue
    run_worker(app, forking=True)
    # THEN every invoice reached its final status and the log accounts for every event
    invoices = invoices_by_number(app)
    assert {number: inv.status for number, inv in invoices.items()} == EXPECTED_STATUSES
    statuses = {row.id: row.status for row in event_rows(app).values()}
    assert sorted(set(statuses.values())) == ["ignored", "processed"]
    assert sum(1 for s in statuses.values() if s == "ignored") == 2


def test_processing_again_changes_nothing(app, stripe, services, fixture_events):
    _deliver_all(stripe, fixture_events)
    run_worker(app)
    first = mirror_state(app)
    # A per-event job for an already processed event is a no-op...
    for event in fixture_events:
        assert attempts.process_one(services.db, event["id"]) == "skipped"
    # ...and so is reprocessing everything from the log (handlers are idempotent merges).
    with services.db.sessions() as session, session.begin():
        session.execute(
            sa.update(StripeEvent).where(StripeEvent.status == "processed").values(status="queued")
        )
    drain.drain(services.db, services.queue, batch_size=3)
    assert mirror_state(app) == first
    with services.db.sessions() as session:
        assert (
            session.scalar(sa.select(sa.func.count()).select_from(InvoiceStatusChange))
            == EXPECTED_HISTORY_ROWS
        )


def _poison(event: dict) -> dict:
    bad = json.loads(json.dumps(event))
    bad["id"] = "evt_1PoisonPoisonPoison000"
    bad["data"]["object"]["id"] = "in_1PoisonInvoice00000000"
    bad["data"]["object"]["amount_due"] = "lots"
    return bad


def test_poison_event_fails_with_its_reason_and_blocks_nothing(app, stripe, services, fixture_events):
    poison = _poison(next(e for e in fixture_events if e["type"] == "invoice.created"))
    _deliver_all(stripe, [poison] + fixture_events)
    run_worker(app)
    rows = event_rows(app)
    # The poison event failed cleanly: reason in the event log and in RQ's failed registry...
    bad = rows[poison["id"]]
    assert bad.status == "failed" and "amount_due" in bad.last_error and bad.attempts >= 1
    registry = FailedJobRegistry(queue=services.queue.queue)
    assert registry.get_job_ids() == [poison["id"]]
    job = services.queue.queue.fetch_job(poison["id"])
    assert "amount_due" in job.latest_result().exc_string
    # ...and every other event went through.
    assert all(row.status in ("processed", "ignored") for eid, row in rows.items() if eid != poison["id"])
    assert {n: i.status for n, i in invoices_by_number(app).items()} == EXPECTED_STATUSES


def test_transient_failure_is_retried_with_backoff_then_processed(
    app, stripe, services, fixture_events, monkeypatch
):
    finalized = next(e for e in fixture_events if e["type"] == "invoice.finalized")
    real = handlers.EVENT_HANDLERS["invoice.finalized"]
    calls = {"n": 0}

    def flaky(event, session):  # fault injection: the first two attempts hit a "deadlock"
        if event["id"] == finalized["id"] and calls["n"] < 2:
            calls["n"] += 1
            raise RuntimeError("simulated deadlock")
        real(event, session)

    monkeypatch.setitem(handlers.EVENT_HANDLERS, "invoice.finalized", flaky)
    _deliver_all(stripe, fixture_events)
    run_worker(app)
    row = event_rows(app)[finalized["id"]]
    # First attempt failed: recorded, and a retry is scheduled (not yet in the failed registry).
    state = (row.status, row.attempts, row.last_error, row.next_attempt_at, calls)
    assert row.status == "retrying" and row.attempts == 1 and "simulated deadlock" in row.last_error, state
    assert row.next_attempt_at is not None
    assert FailedJobRegistry(queue=services.queue.queue).get_job_ids() == []
    time.sleep(1.2)  # the configured backoff is 1 s
    run_worker(app)
    row = event_rows(app)[finalized["id"]]
    jobs = (services.queue.queue.get_job_ids(), services.queue.queue.scheduled_job_registry.get_job_ids())
    assert row.status == "processed" and row.attempts == 2, (row.status, row.attempts, row.last_error, jobs)
    assert {n: i.status for n, i in invoices_by_number(app).items()} == EXPECTED_STATUSES


def test_failure_after_all_retries_lands_in_failed_registry(
    app, stripe, services, fixture_events, monkeypatch
):
    target = fixture_events[0]

    def broken(event, session):
        raise RuntimeError("handler bug")

    monkeypatch.setitem(handlers.EVENT_HANDLERS, target["type"], broken)
    _deliver_all(stripe, [target])
    run_worker(app)
    for _ in services.config.retry_intervals:
        time.sleep(1.2)
        run_worker(app)
    row = event_rows(app)[target["id"]]
    assert row.status == "failed" and row.attempts == 1 + len(services.config.retry_intervals)
    assert FailedJobRegistry(queue=services.queue.queue).get_job_ids() == [target["id"]]


_SLOW_WORKER = textwrap.dedent(
    """
    import os, sys, time, pathlib
    import handlers
    from webhook_service.web.app import create_app
    from webhook_service.core.config import load_config
    from webhook_service.workers import build_worker

    marker = pathlib.Path(sys.argv[1])
    real = handlers.handle
    def stall(event, session):  # fault injection: hang mid-transaction, after real changes
        real(event, session)
        session.flush()
        marker.write_text("in transaction")
        time.sleep(600)
    handlers.handle = stall
    app = create_app(load_config(os.environ))
    build_worker(app, forking=True).work(burst=True, logging_level="WARNING")
    """
)


@pytest.mark.process
def test_worker_killed_mid_job_loses_nothing_and_processes_once(
    app, stripe, services, fixture_events, database_url, redis_url, tmp_path
):
    _deliver_all(stripe, fixture_events)
    marker = tmp_path / "marker"
    env = dict(os.environ, DATABASE_URL=database_url, REDIS_URL=redis_url, STRIPE_WEBHOOK_SECRETS=SECRET,
               LOG_LEVEL="WARNING")  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WORKER, str(marker)], env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "worker never reached the handler"
            time.sleep(0.05)
        # The work-horse runs in its own session (RQ calls setsid), so kill it by pid, as the OOM
        # killer would, mid-transaction; then its parent worker.
        horses = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert horses, "no work-horse found"
        for pid in horses:
            os.kill(int(pid), signal.SIGKILL)
        killed = time.monotonic()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stderr.close()
    # Nothing of the half-done batch is visible: every handled event is still queued.
    assert {row.status for row in event_rows(app).values()} == {"queued", "ignored"}
    assert invoices_by_number(app) == {}
    # Recovery (the scheduler's job, every minute) re-enqueues a drain and a new worker processes
    # everything. The dead session's row locks go when the server notices the closed socket, so
    # recovery may need more than one round, as it would get in production.
    deadline = time.monotonic() + 20
    while any(row.status == "queued" for row in event_rows(app).values()):
        assert time.monotonic() < deadline, "recovery never processed the abandoned events"
        assert recovery.recover(services.db, services.queue, stale_after=timedelta(0))["drain"] is True
        run_worker(app)
        time.sleep(0.2)
    url = sa.engine.make_url(database_url)
    report("worker-sigkill", processed_after_kill_s=round(time.monotonic() - killed, 3),
           database=f"{url.get_backend_name()}:{url.port or ''}")  # fmt: skip  # recovery runs at once here
    rows = event_rows(app).values()
    assert all(row.attempts == 1 for row in rows if row.status == "processed")
    assert {n: i.status for n, i in invoices_by_number(app).items()} == EXPECTED_STATUSES
    with services.db.sessions() as session:
        assert (
            session.scalar(sa.select(sa.func.count()).select_from(InvoiceStatusChange))
            == EXPECTED_HISTORY_ROWS
        )


def test_redis_restarting_empty_before_the_job_ran_loses_nothing(database_url, private_redis, fixture_events):
    _clean(database_url)
    app = create_app(make_config(database_url, private_redis.url))
    services = get_services(app)
    sender = StripeSender(app.test_client())
    _deliver_all(sender, fixture_events)
    assert len(services.queue.queue.get_job_ids()) == 1
    # Redis restarts with no persistence: the drain job and the ticket are gone.
    private_redis.stop()
    private_redis.start()
    services.queue.connection.connection_pool.disconnect()
    assert services.queue.queue.get_job_ids() == []
    # The event log still has everything; recovery finds it and a worker processes it.
    assert recovery.recover(services.db, services.queue, stale_after=timedelta(0))["drain"] is True
    run_worker(app)
    assert {n: i.status for n, i in invoices_by_number(app).items()} == EXPECTED_STATUSES
    services.db.engine.dispose()


def test_deliveries_while_redis_is_down_are_processed_after_it_returns(
    database_url, private_redis, fixture_events
):
    _clean(database_url)
    app = create_app(make_config(database_url, private_redis.url))
    services = get_services(app)
    sender = StripeSender(app.test_client())
    private_redis.stop()
    acme = [e for e in fixture_events if e["data"]["object"].get("number") == "ACME-0001"]
    acme = [e for e in fixture_events if e["data"]["object"].get("id") == acme[-1]["data"]["object"]["id"]]
    # Stripe gets 503 for everything while Redis is down...
    assert {sender.post(e).status_code for e in acme} == {503}
    private_redis.start()
    services.queue.connection.connection_pool.disconnect()
    # ...and its retries are acknowledged as duplicates and processed once Redis is back.
    responses = [sender.post(e) for e in acme]
    assert [r.get_json()["duplicate"] for r in responses] == [True] * len(acme)
    run_worker(app)
    assert invoices_by_number(app)["ACME-0001"].status == "paid"
    services.db.engine.dispose()


def test_lost_retry_is_rescheduled_by_recovery(app, stripe, services, fixture_events, monkeypatch):
    target = fixture_events[0]
    real = handlers.EVENT_HANDLERS[target["type"]]
    failing = {"on": True}

    def flaky(event, session):
        if failing["on"]:
            raise RuntimeError("database hiccup")
        real(event, session)

    monkeypatch.setitem(handlers.EVENT_HANDLERS, target["type"], flaky)
    _deliver_all(stripe, [target])
    run_worker(app)
    assert event_rows(app)[target["id"]].status == "retrying"
    services.queue.connection.flushdb()  # the scheduled retry vanishes with Redis
    failing["on"] = False
    result = recovery.recover(services.db, services.queue, lost_after=timedelta(seconds=-60))
    assert result["retries"] == 1
    run_worker(app)
    assert event_rows(app)[target["id"]].status == "processed"


@pytest.mark.parametrize("config_overrides", [{"retry_intervals": (1, 1, 1)}])
def test_a_retry_lost_with_redis_is_recovered_with_the_retries_it_had(
    app, stripe, services, fixture_events, monkeypatch
):
    target = fixture_events[0]

    def broken(event, session):
        raise RuntimeError("database hiccup")

    monkeypatch.setitem(handlers.EVENT_HANDLERS, target["type"], broken)
    _deliver_all(stripe, [target])
    run_worker(app)  # attempt 1 fails in the drain: retry 1 of 3 scheduled, 2 left after it
    time.sleep(1.2)
    run_worker(app)  # attempt 2 (retry 1) fails: retry 2 scheduled, 1 left after it
    row = event_rows(app)[target["id"]]
    assert (row.status, row.attempts, row.retries_left) == ("retrying", 2, 1)
    services.queue.connection.flushdb()  # the scheduled retry vanishes with Redis
    result = recovery.recover(services.db, services.queue, lost_after=timedelta(seconds=-60))
    assert result["retries"] == 1
    job = services.queue.queue.fetch_job(target["id"])
    assert job is not None and job.retries_left == 1  # what the event had, not zero
    run_worker(app)  # attempt 3 (the recovered retry 2) fails: retry 3 scheduled, none after it
    row = event_rows(app)[target["id"]]
    assert (row.status, row.attempts, row.retries_left) == ("retrying", 3, 0)
    time.sleep(1.2)
    run_worker(app)  # attempt 4 (retry 3) fails: retries spent
    row = event_rows(app)[target["id"]]
    # The whole schedule, no more and no fewer: 1 attempt + 3 retries, across the Redis loss.
    assert (row.status, row.attempts) == ("failed", 1 + len(services.config.retry_intervals))
    assert FailedJobRegistry(queue=services.queue.queue).get_job_ids() == [target["id"]]


@pytest.mark.parametrize("batch_size", [1, 2, 500])
def test_batch_size_does_not_change_the_result(app, stripe, services, fixture_events, batch_size):
    _deliver_all(stripe, fixture_events)
    drain.drain(services.db, services.queue, batch_size=batch_size)
    assert {n: i.status for n, i in invoices_by_number(app).items()} == EXPECTED_STATUSES


def test_redis_client_is_real(redis_url):
    assert redis.Redis.from_url(redis_url).ping() is True


def test_a_drain_leaves_events_another_drain_is_working_on_and_finishes_them_later(pg_app, fixture_events):
    app, services, stripe = pg_app, get_services(pg_app), StripeSender(pg_app.test_client())
    # GIVEN every fixture queued without a backlog share (as if logged before shares existed, so
    # one batch claims them all), and another transaction standing in for a second drain holding
    # the advisory key of one customer
    _deliver_all(stripe, fixture_events)
    with services.db.engine.begin() as conn:
        conn.execute(sa.update(StripeEvent).values(lock_partition=None))
    queued = [e for e in fixture_events if event_rows(app)[e["id"]].status == "queued"]
    busy = next(k for e in queued for k in sorted(handlers.related_keys(e)) if k.startswith("customers:"))
    held = [e["id"] for e in queued if busy in handlers.related_keys(e)]
    assert 0 < len(held) < len(queued)
    other = services.db.engine.connect()
    other.begin()
    other.execute(
        sa.text("SELECT pg_advisory_xact_lock(:ns, hashtext(:k))"),
        {"ns": locks.DRAIN_LOCK_NAMESPACE, "k": busy},
    )
    # WHEN a drain runs one batch
    drain.drain(services.db, services.queue, batch_size=500, max_batches=1)
    # THEN it processed everything but that customer's events, which stay queued, untouched
    rows = event_rows(app)
    assert sorted(i for i in (e["id"] for e in queued) if rows[i].status == "queued") == sorted(held)
    assert all(rows[i].attempts == 0 for i in held)
    # AND once the other transaction ends, the next drain finishes them: same end state as always
    other.rollback()
    other.close()
    drain.drain(services.db, services.queue, batch_size=500)
    assert {n: i.status for n, i in invoices_by_number(app).items()} == EXPECTED_STATUSES
    assert all(row.status in ("processed", "ignored") for row in event_rows(app).values())


def test_a_drain_whose_whole_batch_is_contended_waits_instead_of_spinning(pg_app, fixture_events):
    app, services, stripe = pg_app, get_services(pg_app), StripeSender(pg_app.test_client())
    _deliver_all(stripe, fixture_events)
    queued = [e for e in fixture_events if event_rows(app)[e["id"]].status == "queued"]
    keys = sorted(set().union(*(handlers.related_keys(e) for e in queued)))
    other = services.db.engine.connect()
    other.begin()
    other.execute(
        sa.text("SELECT pg_advisory_xact_lock(:ns, hashtext(k)) FROM unnest(CAST(:keys AS text[])) AS k"),
        {"ns": locks.DRAIN_LOCK_NAMESPACE, "keys": keys},
    )
    # Every key is taken, yet the batch goes ahead whole (the advisory keys steer, rows decide)
    drain.drain(services.db, services.queue, batch_size=500)
    other.rollback()
    other.close()
    assert {n: i.status for n, i in invoices_by_number(app).items()} == EXPECTED_STATUSES


def test_concurrent_drains_take_different_shares_of_the_backlog(pg_app, fixture_events):
    services, stripe = get_services(pg_app), StripeSender(pg_app.test_client())
    _deliver_all(stripe, fixture_events)

    def owners(rows):
        return {json.loads(row.payload)["data"]["object"].get("customer") for row in rows} - {None}

    with services.db.sessions() as first, services.db.sessions() as second:
        with first.begin(), second.begin():
            mine = eventlog.claim_queued(first, 10)
            theirs = eventlog.claim_queued(second, 500)  # while the first still holds its shares
            assert mine and theirs
            assert {row.lock_partition for row in mine}.isdisjoint({row.lock_partition for row in theirs})
            assert owners(mine).isdisjoint(owners(theirs))  # so neither waits for the other's rows

"""Drill: PostgreSQL becomes unreachable while events are being received and processed.

A TCP proxy in front of the machine's PostgreSQL is cut and restored; the server itself is
never stopped. Nothing acknowledged is lost, nothing unacknowledged is half-kept, and recovery
finishes the work once the database is back.
"""

import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tests.conftest import StripeSender, clean_tables, make_config
from tests.drills.stack import report
from tests.helpers import run_worker
from tests.proxy import TcpProxy
from tests.test_processing import EXPECTED_STATUSES
from webhook_service.processing import recovery
from webhook_service.web.app import create_app
from webhook_service.web.services import get_services


@pytest.fixture
def proxied(postgresql_database_url, redis_url):
    url = sa.engine.make_url(postgresql_database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxy.start()
    through = url.set(port=proxy.port, query={"connect_timeout": "2"}).render_as_string(hide_password=False)
    app = create_app(make_config(through, redis_url))
    direct = sa.create_engine(postgresql_database_url)
    clean_tables(direct)
    get_services(app).queue.connection.flushdb()
    yield app, proxy, direct
    proxy.stop()
    get_services(app).db.engine.dispose()
    direct.dispose()


def _statuses(direct):
    with direct.connect() as conn:
        events = dict(
            conn.execute(sa.text("SELECT status, count(*) FROM stripe_events GROUP BY status")).all()
        )
        invoices = dict(conn.execute(sa.text("SELECT number, status FROM invoices")).all())
    return events, invoices


def test_database_outage_during_delivery_and_processing(proxied, fixture_events):
    app, proxy, direct = proxied
    services = get_services(app)
    sender = StripeSender(app.test_client())
    half = len(fixture_events) // 2
    assert {sender.post(e).status_code for e in fixture_events[:half]} == {200}

    proxy.cut()
    # Deliveries during the outage: 503, so Stripe retries; nothing is kept or enqueued for them.
    assert {sender.post(e).status_code for e in fixture_events[half:]} == {503}
    # A worker during the outage: the drain fails and its transaction never commits.
    run_worker(app)
    events, invoices = _statuses(direct)
    assert invoices == {} and set(events) <= {"queued", "ignored"}
    assert sum(events.values()) == half

    proxy.restore()
    restored = time.monotonic()
    # Stripe's retries arrive, and recovery (the scheduler's job) re-enqueues the stalled drain.
    answers = [sender.post(fixture_events[half]).status_code]
    first_200 = time.monotonic() - restored
    answers += [sender.post(e).status_code for e in fixture_events[half + 1 :]]
    assert set(answers) == {200}
    recovery.recover(services.db, services.queue, stale_after=timedelta(0))
    run_worker(app)
    events, invoices = _statuses(direct)
    assert set(events) == {"processed", "ignored"} and events["ignored"] == 2
    assert sum(events.values()) == len({e["id"] for e in fixture_events})
    assert invoices == EXPECTED_STATUSES
    report("postgres-reset", first_200_after_restore_s=round(first_200, 4))


def test_database_outage_during_retries_then_replay_completes(
    proxied, fixture_events, monkeypatch, redis_url
):
    import time

    from click.testing import CliRunner
    from rq.registry import FailedJobRegistry

    import handlers
    from webhook_service.cli import cli

    app, proxy, direct = proxied
    services = get_services(app)
    sender = StripeSender(app.test_client())
    target = next(e for e in fixture_events if e["type"] == "invoice.finalized")
    real, broken = handlers.EVENT_HANDLERS[target["type"]], {"on": True}

    def handler(event, session):  # fault injection: fails until the "fix" is deployed
        if broken["on"]:
            raise RuntimeError("handler bug")
        real(event, session)

    monkeypatch.setitem(handlers.EVENT_HANDLERS, target["type"], handler)
    assert sender.post(target).status_code == 200
    run_worker(app)  # first attempt fails; a per-event job is scheduled with backoff
    proxy.cut()
    for _ in services.config.retry_intervals:  # every retry runs while the database is away
        time.sleep(1.2)
        run_worker(app)
    assert FailedJobRegistry(queue=services.queue.queue).get_job_ids() == [target["id"]]

    proxy.restore()
    broken["on"] = False
    env = {"DATABASE_URL": services.config.database_url, "REDIS_URL": redis_url, "LOG_LEVEL": "WARNING"}
    result = CliRunner().invoke(cli, ["replay", "--failed"], env=env, catch_exceptions=False)
    assert result.exit_code == 0 and "Re-enqueued 1 events." in result.output, result.output
    run_worker(app)
    with direct.connect() as conn:
        status = conn.execute(
            sa.text("SELECT status FROM stripe_events WHERE id = :id"), {"id": target["id"]}
        )
        assert status.scalar() == "processed"
    assert FailedJobRegistry(queue=services.queue.queue).get_job_ids() == []


def test_connections_dropped_while_idle_cost_no_delivery(proxied, fixture_events):
    """Pooled connections killed while idle (a server restart): the next delivery still gets 200."""
    app, proxy, direct = proxied
    sender = StripeSender(app.test_client())
    assert sender.post(fixture_events[0]).status_code == 200
    proxy.cut()
    proxy.restore()  # every pooled connection's server side is gone; nothing has noticed yet
    assert sender.post(fixture_events[1]).status_code == 200
    # Other requests get a 503 at worst (never a 500) and recover on their own.
    proxy.cut()
    proxy.restore()
    assert app.test_client().get("/readyz").status_code in (200, 503)
    assert app.test_client().get("/readyz").status_code == 200

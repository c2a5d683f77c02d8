"""GET /metrics and the readiness report an SRE alerts on, on real Redis and each database."""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

import handlers
from tests.conftest import OTHER_SECRET, SECRET, StripeSender, make_config
from tests.helpers import run_worker
from webhook_service.core.models import EventStatus, ProcessHeartbeat, StripeEvent, utcnow
from webhook_service.processing import counters, eventlog, heartbeats, snapshots
from webhook_service.processing.envelope import parse_envelope
from webhook_service.web.app import create_app
from webhook_service.web.reporter import Reporter
from webhook_service.web.services import get_services
from webhook_service.workers import AppCronScheduler

#: Counters and heartbeats work through a transaction-pooling PgBouncer too.
pytestmark = pytest.mark.pgbouncer


@pytest.fixture
def config_overrides():
    # No backoff: a failing event goes straight to `failed`, so tests need not wait for retries.
    return {"retry_intervals": ()}


@pytest.fixture
def breaks(monkeypatch):
    """Make the handlers of some event types raise until the returned set is emptied."""
    broken: set[str] = set()

    def wrap(event_type):
        real = handlers.EVENT_HANDLERS[event_type]

        def handler(event, session):
            if event_type in broken:
                raise RuntimeError(f"handler bug in {event_type}")
            real(event, session)

        monkeypatch.setitem(handlers.EVENT_HANDLERS, event_type, handler)

    def breaker(*event_types):
        for event_type in event_types:
            wrap(event_type)
            broken.add(event_type)
        return broken

    return breaker


def scrape(client) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples, name, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


def deliver(stripe, events):
    for event in events:
        assert stripe.post(event).status_code == 200


def invoice_events(fixture_events, event_type=None):
    return [
        e
        for e in fixture_events
        if e["type"] in handlers.HANDLED_TYPES
        and e["data"]["object"].get("id")
        and (event_type is None or e["type"] == event_type)
    ]


# ---- counters that only go up ---------------------------------------------------------------


def test_counters_never_go_down_across_a_replay(app, client, stripe, fixture_events, breaks, operator_cli):
    handled = invoice_events(fixture_events)
    voided = invoice_events(fixture_events, "invoice.voided")
    fixed = breaks("invoice.voided")
    deliver(stripe, fixture_events)
    before = scrape(client)
    assert total(before, "stripe_webhook_events_received_total") == len(fixture_events)
    assert total(before, "stripe_webhook_events_received_total", type="invoice.paid") == 2
    assert total(before, "stripe_webhook_events_ignored_total") == len(fixture_events) - len(handled)
    assert total(before, "stripe_webhook_backlog_events", status="queued") == len(handled)
    deliver(stripe, fixture_events[:3])  # duplicates are not new events
    assert total(scrape(client), "stripe_webhook_events_received_total") == len(fixture_events)

    run_worker(app)
    failed = scrape(client)
    assert total(failed, "stripe_webhook_events_failed_total", type="invoice.voided") == len(voided)
    assert total(failed, "stripe_webhook_events_processed_total") == len(handled) - len(voided)
    assert total(failed, "stripe_webhook_failed_events") == len(voided)
    first_attempts = total(failed, "stripe_webhook_processing_latency_seconds_count")
    assert first_attempts == len(handled) - len(voided)

    # The voided events were received a day ago: a replay must not put a day into the histogram.
    with get_services(app).db.sessions() as session, session.begin():
        session.execute(sa.update(StripeEvent).values(received_at=utcnow() - timedelta(days=1)))
    fixed.clear()
    result = operator_cli("replay", "--failed")
    assert result.exit_code == 0, result.output
    run_worker(app)
    after = scrape(client)
    assert total(after, "stripe_webhook_events_failed_total", type="invoice.voided") == len(voided)
    assert total(after, "stripe_webhook_failed_events") == 0
    assert total(after, "stripe_webhook_events_processed_total") == len(handled)
    assert total(after, "stripe_webhook_events_received_total") == len(fixture_events)
    assert total(after, "stripe_webhook_processing_latency_seconds_count") == first_attempts
    inf = total(after, "stripe_webhook_processing_latency_seconds_bucket", le="+Inf")
    assert inf == first_attempts == total(after, "stripe_webhook_processing_latency_seconds_bucket", le="60")
    for name in ("received", "processed", "failed"):
        for (sample, labels), value in before.items() | failed.items():
            if sample == f"stripe_webhook_events_{name}_total":
                assert after.get((sample, labels), 0) >= value, (sample, labels)


@pytest.fixture
def operator_cli(database_url, redis_url, monkeypatch):
    from click.testing import CliRunner

    from webhook_service.cli import cli

    env = {
        "DATABASE_URL": database_url, "REDIS_URL": redis_url, "STRIPE_WEBHOOK_SECRETS": SECRET,
        "LOG_LEVEL": "WARNING", "EVENT_RETRY_INTERVALS": "",
    }  # fmt: skip
    for key in ("SENTRY_DSN", "PORTAL_API_KEYS", "STRIPE_ACCEPT_MODE", "STRIPE_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    return lambda *args: CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def _logged(services, event: dict) -> str:
    body = json.dumps(event).encode()
    eventlog.record_event(services.db.engine, parse_envelope(body), body)
    return event["id"]


def test_retries_and_final_failures_are_counted_once_each(services, client, fixture_events):
    event_id = _logged(services, invoice_events(fixture_events)[0])
    soon = utcnow() + timedelta(seconds=30)
    with services.db.sessions() as session, session.begin():
        assert eventlog.record_failure(session, event_id, "RuntimeError: first", soon)
    with services.db.sessions() as session, session.begin():
        assert eventlog.record_failure(session, event_id, "RuntimeError: second", soon)
    with services.db.sessions() as session, session.begin():
        assert eventlog.record_failure(session, event_id, "RuntimeError: last", None)
    # RQ files a permanently failed event with one more run that fails at once: still one failure.
    with services.db.sessions() as session, session.begin():
        assert eventlog.record_failure(session, event_id, "RuntimeError: filed", None)
    samples = scrape(client)
    assert total(samples, "stripe_webhook_event_retries_total") == 2
    assert total(samples, "stripe_webhook_events_failed_total") == 1
    assert total(samples, "stripe_webhook_events_processed_total") == 0


def test_counter_shards_are_summed(services, client):
    for _ in range(40):
        with services.db.sessions() as session, session.begin():
            counters.add(
                session, {(counters.PROCESSED, "invoice.paid"): 1, (counters.RETRIED, "invoice.paid"): 2}
            )
    with services.db.sessions() as session:
        rows = session.scalar(sa.select(sa.func.count()).select_from(sa.table("metric_counters")))
    assert 2 < rows <= 2 * counters.SHARDS
    samples = scrape(client)
    assert total(samples, "stripe_webhook_events_processed_total", type="invoice.paid") == 40
    assert total(samples, "stripe_webhook_event_retries_total", type="invoice.paid") == 80


# ---- backlog ---------------------------------------------------------------------------------


def test_backlog_age_counts_retrying_and_overdue_events(services, client, fixture_events):
    queued, retrying = (_logged(services, e) for e in invoice_events(fixture_events)[:2])
    now = utcnow()
    with services.db.sessions() as session, session.begin():
        session.execute(
            sa.update(StripeEvent)
            .where(StripeEvent.id == queued)
            .values(received_at=now - timedelta(minutes=5))
        )
        session.execute(
            sa.update(StripeEvent)
            .where(StripeEvent.id == retrying)
            .values(
                status=EventStatus.RETRYING.value,
                received_at=now - timedelta(hours=1),
                next_attempt_at=now - timedelta(minutes=10),
            )
        )
    samples = scrape(client)
    assert 3600 <= total(samples, "stripe_webhook_backlog_age_seconds") < 3660
    assert 600 <= total(samples, "stripe_webhook_retry_overdue_seconds") < 660
    assert total(samples, "stripe_webhook_backlog_events", status="queued") == 1
    assert total(samples, "stripe_webhook_backlog_events", status="retrying") == 1
    assert total(samples, "stripe_webhook_backlog_events", status="overdue") == 1
    ready = client.get("/readyz").get_json()
    assert ready["events"] == {"pending": 2, "failed": 0}


def test_an_empty_backlog_reads_zero(client):
    samples = scrape(client)
    assert samples[("stripe_webhook_backlog_age_seconds", ())] == 0
    assert samples[("stripe_webhook_retry_overdue_seconds", ())] == 0
    assert samples[("stripe_webhook_database_up", ())] == 1 and samples[("stripe_webhook_redis_up", ())] == 1


# ---- rejected deliveries ---------------------------------------------------------------------

HOSTILE = {
    "signature_mismatch": lambda s, body: s.post(body, secret=OTHER_SECRET),
    "timestamp_outside_tolerance": lambda s, body: s.post(body, timestamp=int(time.time()) - 3600),
    "signature_missing": lambda s, body: s.post(body, header=""),
    "signature_malformed": lambda s, body: s.post(body, header="t=abc,v1=deadbeef"),
    "payload_invalid": lambda s, body: s.post(b"not json {"),
    "payload_too_large": lambda s, body: s.post(b"{" + b" " * (1024 * 1024 + 10) + b"}"),
    "method_not_allowed": lambda s, body: s.client.get("/webhooks/stripe"),
}


def test_rejections_are_logged_and_counted_by_reason_without_body_or_header(
    client, stripe, fixture_events, caplog
):
    event = dict(fixture_events[0], id="evt_1RejectedDeliveryMarker")
    body = json.dumps(event).encode()
    caplog.set_level(logging.INFO, logger="webhook_service")
    statuses = {reason: send(stripe, body).status_code for reason, send in HOSTILE.items()}
    assert statuses == {
        reason: {"payload_too_large": 413, "method_not_allowed": 405}.get(reason, 400) for reason in HOSTILE
    }
    samples = scrape(client)
    for reason in HOSTILE:
        assert total(samples, "stripe_webhook_deliveries_rejected_total", reason=reason) == 1, reason
    rejected = [r for r in caplog.records if r.getMessage().startswith("delivery rejected")]
    assert sorted(r.fields["reason"] for r in rejected) == sorted(HOSTILE)
    for record in rejected:
        assert record.levelno == logging.WARNING and record.fields["status"] in (400, 405, 413)
    skews = {r.fields["reason"]: r.fields.get("skew_s") for r in rejected}
    assert 3590 <= skews["timestamp_outside_tolerance"] <= 3700
    assert abs(skews["signature_mismatch"]) < 60 and skews["payload_invalid"] is None
    logged = caplog.text + "".join(json.dumps(getattr(r, "fields", {})) for r in caplog.records)
    assert "RejectedDeliveryMarker" not in logged and "v1=" not in logged and "deadbeef" not in logged
    assert SECRET not in logged and OTHER_SECRET not in logged


def test_readyz_shows_a_secret_mismatch(client, stripe, fixture_events, services):
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["webhook_signatures"]["status"] == "ok"
    for event in fixture_events[:3]:
        assert stripe.post(event, secret=OTHER_SECRET).status_code == 400
    ready = client.get("/readyz")
    body = ready.get_json()
    # Reported, not a 503: the load balancer must keep sending the deliveries that do verify.
    assert ready.status_code == 200 and body["status"] == "ready"
    assert (
        body["webhook_signatures"]["status"] == "mismatch" and body["webhook_signatures"]["mismatched"] == 3
    )
    assert "STRIPE_WEBHOOK_SECRETS" in body["warnings"][0]
    # A backfill or a repair logging what it fetched meanwhile is no accepted delivery.
    fetched = [
        snapshots.snapshot_event(event["data"]["object"], source=source, run=1, fetched_at=int(time.time()))
        for source, event in zip(snapshots.SOURCES, fixture_events[4:], strict=False)
    ]
    assert snapshots.record_snapshots(services.db, None, fetched).recorded == 2
    assert client.get("/readyz").get_json()["webhook_signatures"]["status"] == "mismatch"
    assert stripe.post(fixture_events[3]).status_code == 200
    signatures = client.get("/readyz").get_json()["webhook_signatures"]
    assert (signatures["status"], signatures["accepted"]) == ("partial_mismatch", 1)


def test_another_process_rejections_reach_readyz_within_seconds(
    database_url, redis_url, client, fixture_events
):
    """A second app on the same database stands in for another gunicorn process or machine."""
    other = create_app(make_config(database_url, redis_url, retry_intervals=()))
    reporter = Reporter(other, interval=0.2).start()
    try:
        assert (
            StripeSender(other.test_client()).post(fixture_events[0], secret=OTHER_SECRET).status_code == 400
        )
        deadline = time.monotonic() + 10
        while client.get("/readyz").get_json()["webhook_signatures"]["status"] != "mismatch":
            assert time.monotonic() < deadline, "the other process's rejection never showed"
            time.sleep(0.1)
        roles = scrape(client)
        assert total(roles, "stripe_webhook_processes", role="web") == 1  # the reporter beats as "web"
    finally:
        reporter.stop()
        get_services(other).db.engine.dispose()


def test_a_rejection_is_answered_while_the_database_is_down(redis_url, fixture_events):
    dead_db = "postgresql+psycopg://root@127.0.0.1:1/none?connect_timeout=1"
    app = create_app(make_config(dead_db, redis_url))
    response = StripeSender(app.test_client()).post(fixture_events[0], secret=OTHER_SECRET)
    assert response.status_code == 400
    samples = scrape(app.test_client())  # the count waits in memory for the database
    assert samples[("stripe_webhook_database_up", ())] == 0
    assert samples[("stripe_webhook_redis_up", ())] == 1


# ---- heartbeats and outages ---------------------------------------------------------------


def test_heartbeats_per_role(app, client, services):
    samples = scrape(client)
    assert {
        labels: value for (name, labels), value in samples.items() if name == "stripe_webhook_processes"
    } == {(("role", role),): 0 for role in heartbeats.ROLES}
    run_worker(app)  # RQ's worker loop beats as "worker"
    AppCronScheduler(
        services.db, connection=services.queue.connection, queue_name=services.config.queue_name
    ).heartbeat()
    samples = scrape(client)
    assert total(samples, "stripe_webhook_processes", role="worker") == 1
    assert total(samples, "stripe_webhook_processes", role="scheduler") == 1
    beat = total(samples, "stripe_webhook_last_heartbeat_timestamp_seconds", role="worker")
    assert abs(beat - time.time()) < 60
    with services.db.sessions() as session, session.begin():  # a process silent for 4 minutes is gone
        session.execute(sa.update(ProcessHeartbeat).values(beat_at=utcnow() - timedelta(minutes=4)))
    assert total(scrape(client), "stripe_webhook_processes") == 0


def test_metrics_say_paused(services, client):
    from webhook_service.processing import pause

    assert scrape(client)[("stripe_webhook_paused", ())] == 0
    pause.pause(services.db, actor="test:metrics")
    assert scrape(client)[("stripe_webhook_paused", ())] == 1
    pause.resume(services.db, services.queue, actor="test:metrics")
    assert scrape(client)[("stripe_webhook_paused", ())] == 0


def test_metrics_answer_from_the_database_when_redis_is_down(database_url, fixture_events):
    from tests.conftest import _clean

    _clean(database_url)
    app = create_app(make_config(database_url, "redis://127.0.0.1:1/0"))
    services = get_services(app)
    _logged(services, invoice_events(fixture_events)[0])
    samples = scrape(app.test_client())
    assert samples[("stripe_webhook_redis_up", ())] == 0 and samples[("stripe_webhook_database_up", ())] == 1
    assert total(samples, "stripe_webhook_events_received_total") == 1
    assert total(samples, "stripe_webhook_backlog_events", status="queued") == 1
    assert ("stripe_webhook_queue_depth", ()) not in samples
    services.db.engine.dispose()


# ---- bounded scrape cost -------------------------------------------------------------------


def test_no_scrape_query_needs_a_scan_of_the_event_log(postgresql_database_url, redis_url, fixture_events):
    """Every statement /metrics sends that reads stripe_events has an index path (PostgreSQL's plans)."""
    from tests.conftest import _clean

    _clean(postgresql_database_url)
    app = create_app(make_config(postgresql_database_url, redis_url))
    services, client = get_services(app), app.test_client()
    deliver(StripeSender(client), fixture_events)
    statements = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    engine = services.db.engine
    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        scrape(client)
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    reads = [(s, p) for s, p in statements if "stripe_events" in s]
    assert reads, statements
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("SET enable_seqscan = off")  # a seq scan in the plan now means "no index fits"
        for statement, parameters in reads:
            assert "GROUP BY" not in statement.upper(), statement
            cursor.execute("EXPLAIN " + statement, parameters)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert "Seq Scan on stripe_events" not in plan, plan
    finally:
        raw.rollback()
        raw.close()
        engine.dispose()


def test_the_upgrade_starts_counters_from_the_log(tmp_path, fixture_events):
    from alembic.script import ScriptDirectory

    from webhook_service.processing.db import alembic_config, create_database, upgrade

    url = f"sqlite:///{tmp_path / 'old.db'}"
    scripts = ScriptDirectory.from_config(alembic_config(url))
    [ours] = [rev for rev in scripts.walk_revisions() if rev.module.__file__.endswith("_metric_counters.py")]
    upgrade(url, ours.down_revision)
    database = create_database(url)
    with database.engine.begin() as conn:
        for i, (status, kind) in enumerate([("processed", "invoice.paid")] * 3 + [("failed", "invoice.paid"),
                                            ("ignored", "invoice.upcoming")]):  # fmt: skip
            conn.execute(
                sa.text(
                    "INSERT INTO stripe_events (id, type, livemode, received_at, status, attempts, payload) "
                    "VALUES (:id, :type, false, '2026-11-01 00:00:00', :status, 1, '{}')"
                ),
                {"id": f"evt_{i}", "type": kind, "status": status},
            )
    upgrade(url)
    with database.sessions() as session:
        values = counters.totals(session)
    assert values == {
        ("received", "invoice.paid"): 4,
        ("received", "invoice.upcoming"): 1,
        ("processed", "invoice.paid"): 3,
        ("failed", "invoice.paid"): 1,
        ("ignored", "invoice.upcoming"): 1,
    }
    database.engine.dispose()


def test_latency_buckets():
    assert counters.latency_label(0.0) == "0.05"
    assert counters.latency_label(0.05) == "0.05"
    assert counters.latency_label(0.07) == "0.1"
    assert counters.latency_label(3599) == "3600"
    assert counters.latency_label(86400) == counters.INF
    buckets, count, seconds = counters.histogram(
        {
            (counters.LATENCY_BUCKET, "0.1"): 2,
            (counters.LATENCY_BUCKET, "+Inf"): 1,
            (counters.LATENCY_SUM_MS, ""): 9100,
        }
    )
    assert dict(buckets)["0.05"] == 0 and dict(buckets)["0.1"] == 2 and dict(buckets)["+Inf"] == 3
    assert (count, seconds) == (3, 9.1)

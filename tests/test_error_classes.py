"""Database errors are told apart: unreachable -> 503 and retry; a bug or schema drift -> 500,
reported to Sentry and shown in /readyz; failed jobs whose work got done leave RQ's failed registry."""

from __future__ import annotations

import pytest
import sentry_sdk
import sqlalchemy as sa
from rq.registry import FailedJobRegistry

from tests.conftest import StripeSender, clean_tables, make_config
from tests.helpers import disable_sentry, run_worker
from tests.test_no_pii import CaptureTransport
from webhook_service.processing import drain, recovery
from webhook_service.processing.db import is_connection_error
from webhook_service.web.app import create_app
from webhook_service.web.observability import init_sentry
from webhook_service.web.services import get_services

GONE = "lock_partition_gone"


@pytest.fixture
def pg_app(postgresql_database_url, redis_url):
    direct = sa.create_engine(postgresql_database_url)
    clean_tables(direct)
    app = create_app(make_config(postgresql_database_url, redis_url))
    get_services(app).queue.connection.flushdb()
    transport = CaptureTransport()
    init_sentry(get_services(app).config, transport=transport)
    yield app, direct, transport
    disable_sentry()
    get_services(app).db.engine.dispose()
    direct.dispose()


def test_schema_drift_is_a_reported_500_not_a_quiet_503(pg_app, fixture_events):
    app, direct, transport = pg_app
    with direct.begin() as conn:  # a deploy whose migration did not run, or a hand-made change
        conn.execute(sa.text(f"ALTER TABLE stripe_events RENAME COLUMN lock_partition TO {GONE}"))
    try:
        response = StripeSender(app.test_client()).post(fixture_events[0])
        assert response.status_code == 500
        sentry_sdk.flush()
        assert "UndefinedColumn" in transport.text()
        ready = app.test_client().get("/readyz").get_json()
        assert "UndefinedColumn" in ready["recent_errors"][-1]["error"]
    finally:
        with direct.begin() as conn:
            conn.execute(
                sa.text("ALTER TABLE stripe_events RENAME COLUMN lock_partition_gone TO lock_partition")
            )
    assert StripeSender(app.test_client()).post(fixture_events[0]).status_code == 200


def test_readyz_names_a_schema_behind_the_code(pg_app):
    app, direct, _transport = pg_app
    with direct.begin() as conn:
        head = conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0001'"))
    try:
        response = app.test_client().get("/readyz")
        assert response.status_code == 503
        assert (
            response.get_json()["checks"]["schema"] == f"database at migration 0001, this code needs {head}"
        )
    finally:
        with direct.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": head})
    assert app.test_client().get("/readyz").status_code == 200


def test_connection_errors_and_statement_errors_are_told_apart():
    import psycopg

    assert is_connection_error(psycopg.OperationalError("server closed the connection"))
    assert is_connection_error(sa.exc.TimeoutError("QueuePool limit reached"))
    assert is_connection_error(sa.exc.OperationalError("SELECT 1", {}, psycopg.OperationalError("x")))
    assert not is_connection_error(sa.exc.ProgrammingError("SELECT", {}, psycopg.errors.UndefinedColumn("x")))
    assert not is_connection_error(sa.exc.IntegrityError("INSERT", {}, psycopg.errors.UniqueViolation("x")))
    assert not is_connection_error(ValueError("x"))


def test_failed_jobs_whose_work_got_done_leave_the_failed_registry(pg_app, fixture_events, monkeypatch):
    app, direct, _transport = pg_app
    services = get_services(app)
    sender = StripeSender(app.test_client())
    done, still_failed = fixture_events[0], fixture_events[1]
    assert {sender.post(e).status_code for e in (done, still_failed)} == {200}

    def unreachable(*_args, **_kwargs):  # the database went away under a drain
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(drain, "drain", unreachable)
    run_worker(app)
    registry = FailedJobRegistry(queue=services.queue.queue)
    assert [j for j in registry.get_job_ids() if j.startswith("drain-")]  # what used to stay 30 days
    monkeypatch.undo()
    # Per-event jobs that failed earlier: one for an event processed since, one whose event is
    # still failed (that one stays, for replay).
    for event_id in (done["id"], still_failed["id"]):
        job = services.queue.queue.enqueue("jobs.events.process_event", event_id, job_id=event_id)
        services.queue.queue.remove(job)
        registry.add(job, exc_string="Exception: gone")
    services.queue.enqueue_drain()
    run_worker(app)  # the database is back: a drain processes the events
    with direct.begin() as conn:
        conn.execute(
            sa.text("UPDATE stripe_events SET status = 'failed' WHERE id = :id"), {"id": still_failed["id"]}
        )

    result = recovery.recover(services.db, services.queue)
    assert result["cleared"] >= 2
    assert registry.get_job_ids() == [still_failed["id"]]

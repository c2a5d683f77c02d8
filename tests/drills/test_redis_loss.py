"""Drill: Redis goes away and comes back empty while a worker and the scheduler run.

Real processes (`webhook-service worker`, `webhook-service scheduler`) on a private Redis that is
killed and started again with nothing in it. Both processes stay up, the worker shows in
`rq info` again, a retry that was scheduled before the loss fires (recovery re-enqueues it from
the event log), and /metrics keeps answering with the database's figures throughout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from rq import Worker

from tests.conftest import StripeSender, clean_tables, make_config
from tests.drills.stack import report
from webhook_service.core.models import utcnow
from webhook_service.web.app import create_app
from webhook_service.web.services import get_services

pytestmark = pytest.mark.slow

RECOVERY_INTERVAL = 2


def _spawn(command: str, env: dict, log) -> subprocess.Popen:
    script = os.path.join(os.path.dirname(sys.executable), "webhook-service")
    return subprocess.Popen([script, command], env=env, stdout=log, stderr=log)


def _wait_for(check, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


def test_worker_and_scheduler_survive_an_empty_redis_restart_and_retries_fire(
    private_redis, postgresql_database_url, fixture_events, tmp_path
):
    direct = sa.create_engine(postgresql_database_url)
    clean_tables(direct)
    app = create_app(make_config(postgresql_database_url, private_redis.url))
    services = get_services(app)
    env = {
        **os.environ,
        "DATABASE_URL": postgresql_database_url,
        "REDIS_URL": private_redis.url,
        "RECOVERY_INTERVAL_SECONDS": str(RECOVERY_INTERVAL),
        "EVENT_RETRY_INTERVALS": "4,4",
        "LOG_LEVEL": "INFO",
    }
    log = open(tmp_path / "processes.log", "wb")  # noqa: SIM115
    worker = _spawn("worker", env, log)
    scheduler = _spawn("scheduler", env, log)
    try:
        connection = services.queue.connection

        def status(event_id):
            with direct.connect() as conn:
                return conn.scalar(
                    sa.text("SELECT status FROM stripe_events WHERE id = :id"), {"id": event_id}
                )

        _wait_for(lambda: len(Worker.all(connection=connection)) == 1, 30, "the worker registers")
        sender = StripeSender(app.test_client())
        first, retried = [e for e in fixture_events if e["type"].startswith("invoice.")][:2]
        assert sender.post(first).status_code == 200
        _wait_for(lambda: status(first["id"]) == "processed", 30, "the first event is processed")

        # A retry due in 4 s, scheduled in Redis (as a failed attempt leaves it), then Redis is lost.
        assert sender.post(retried).status_code == 200
        with direct.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE stripe_events SET status = 'retrying', next_attempt_at = :at, retries_left = 1 "
                    "WHERE id = :id"
                ),
                {"at": utcnow() + timedelta(seconds=4), "id": retried["id"]},
            )
        connection.delete(services.queue.ticket_key)
        connection.delete(services.queue.queue.key)  # only the scheduled retry is in Redis
        services.queue.enqueue_event(retried["id"], delay_seconds=4, retries_left=1)
        lost_at = time.monotonic()
        private_redis.stop()

        metrics = app.test_client().get("/metrics")  # answers with the database's figures
        assert metrics.status_code == 200
        text = metrics.get_data(as_text=True)
        assert "stripe_webhook_redis_up 0.0" in text and "stripe_webhook_events_received" in text
        time.sleep(3)
        private_redis.start()  # empty: no jobs, no scheduled retry, no worker registration

        try:
            took = _wait_for(lambda: status(retried["id"]) == "processed", 40, "the lost retry fires")
        except AssertionError:
            print("WORKER", worker.poll(), "SCHED", scheduler.poll())
            print((tmp_path / "processes.log").read_text()[-6000:])
            raise
        # Due 4 s after the loss; recovery finds it within its interval plus the lost-retry grace.
        fired = time.monotonic() - lost_at
        assert fired < 4 + RECOVERY_INTERVAL + 10 + 8, took
        assert worker.poll() is None and scheduler.poll() is None, (tmp_path / "processes.log").read_text()
        _wait_for(
            lambda: len(Worker.all(connection=connection)) == 1, 30, "the worker shows in rq info again"
        )
        assert app.test_client().get("/metrics").status_code == 200
        report("redis-empty-restart", lost_retry_fired_after_loss_s=round(fired, 3), retry_due_s=4,
               recovery_interval_s=RECOVERY_INTERVAL, redis_down_s=3)  # fmt: skip
    finally:
        for proc in (worker, scheduler):
            proc.terminate()
        for proc in (worker, scheduler):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()
        services.db.engine.dispose()
        direct.dispose()

"""Two scheduler processes (a rolling deploy's overlap): one leads, the other enqueues nothing.

RQ's cron has no leader election, so each scheduler would enqueue recovery, the sweep and the
prune on its own. The scheduler holds a lease in Redis instead (webhook_service/workers.py);
tests/drills/test_two_schedulers.py runs the real processes.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
import time_machine
from rq.cron import get_cron_job_history_key

from jobs import events as event_jobs
from jobs import sweep as sweep_jobs
from webhook_service.workers import AppCronScheduler, leader_key

QUEUE = "leader-test"
RECOVERY = get_cron_job_history_key("jobs.events.recover_events")
SWEEP = get_cron_job_history_key("jobs.sweep.sweep_past_due")
START = datetime(2026, 12, 2, 5, 59, 50, tzinfo=UTC)


@pytest.fixture
def connection(redis_url):
    conn = redis.Redis.from_url(redis_url)
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


def _scheduler(services, connection, lease: float = 15) -> AppCronScheduler:
    cron = AppCronScheduler(services.db, connection=connection, queue_name=QUEUE, lease_seconds=lease)
    cron.register(event_jobs.recover_events, queue_name=QUEUE, interval=10)
    cron.register(sweep_jobs.sweep_past_due, queue_name=QUEUE, cron="0 6 * * *")
    return cron


def test_two_schedulers_enqueue_each_run_once(services, connection):
    with time_machine.travel(START, tick=False) as traveller:
        first, second = _scheduler(services, connection), _scheduler(services, connection)
        for _ in range(40):  # 40 s: recovery due at 0, 10, 20 and 30 s, the sweep at 06:00
            for cron in (first, second):
                assert cron.tick() <= 15 / 3  # the leader renews well within its lease
            traveller.shift(timedelta(seconds=1))
        assert connection.zcard(RECOVERY) == 4
        assert connection.zcard(SWEEP) == 1
        assert [first.leading, second.leading] == [True, False]
        assert connection.get(leader_key(QUEUE)) == first.name.encode()


def test_a_standby_taking_over_does_not_repeat_what_the_leader_did(services, connection):
    with time_machine.travel(START, tick=False) as traveller:
        first, second = _scheduler(services, connection), _scheduler(services, connection)
        traveller.shift(timedelta(seconds=11))  # 06:00:01: the sweep is due for both
        first.tick()
        second.tick()
        assert connection.zcard(SWEEP) == 1 and connection.zcard(RECOVERY) == 1
        first.resign()  # SIGTERM: the lease is given up at once
        second.tick()
        assert second.leading
        assert connection.zcard(SWEEP) == 1  # not the same sweep a second time
        assert connection.zcard(RECOVERY) == 1  # next recovery one interval on, not at once
        traveller.shift(timedelta(seconds=10))
        second.tick()
        assert connection.zcard(RECOVERY) == 2


def test_each_scheduler_says_whether_it_leads_from_its_first_turn(services, connection, caplog):
    first, second = _scheduler(services, connection), _scheduler(services, connection)
    with caplog.at_level("INFO", logger="webhook_service.workers"):
        first.tick()
        second.tick()
        second.tick()  # said once, not every turn
    said = [r.getMessage() for r in caplog.records if r.name == "webhook_service.workers"]
    assert said == [
        f"scheduler {first.name}: leading",
        f"scheduler {second.name}: standing by (another leads)",
    ]


def test_a_leader_that_stops_renewing_loses_the_lease(services, connection):
    first, second = _scheduler(services, connection, lease=0.3), _scheduler(services, connection, lease=0.3)
    first.tick()
    second.tick()
    assert first.leading and not second.leading
    time.sleep(0.4)  # the leader is gone (SIGKILL): nothing renews its lease
    second.tick()
    assert second.leading and connection.get(leader_key(QUEUE)) == second.name.encode()
    first.tick()  # back from a pause: it finds another leader and stands by
    assert not first.leading


def test_the_lease_is_configured_once_like_the_rest():
    from webhook_service.core.config import load_config

    assert load_config({}).scheduler_lease_seconds == 15
    assert load_config({"SCHEDULER_LEASE_SECONDS": "4"}).scheduler_lease_seconds == 4


def test_a_daily_run_the_leader_did_not_live_to_make_is_made_by_the_standby(services, connection):
    # The leader is SIGKILLed at 05:59:55; its lease still holds when the sweep falls due at
    # 06:00. The standby must not count that sweep as done: nobody enqueued it.
    with time_machine.travel(START, tick=False) as traveller:
        first, second = _scheduler(services, connection), _scheduler(services, connection)
        first.tick()
        second.tick()
        assert first.leading and not second.leading
        traveller.shift(timedelta(seconds=11))  # 06:00:01; the leader is dead and ticks no more
        second.tick()
        assert not second.leading and connection.zcard(SWEEP) == 0
        connection.delete(leader_key(QUEUE))  # the dead leader's lease lapses
        second.tick()
        assert second.leading
        assert connection.zcard(SWEEP) == 1  # the sweep of the day, made once

"""Drill: two scheduler processes run at once (a rolling deploy's overlap, or a second by mistake).

One leads, holding a lease in Redis; the other stands by and enqueues nothing, so recovery, the
daily past-due sweep and the daily prune run once per period, not twice. When the leader is
SIGKILLed, the standby takes over once the lease lapses, with no one restarting anything; when
it gets SIGTERM (a rolling deploy's old process), it hands the lease to the new one at once.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis
from rq.cron import CronScheduler, get_cron_job_history_key

from tests.drills.stack import DeliveryStream, Processes, check_outcome, lifecycles, report, wait_for
from webhook_service.workers import leader_key

pytestmark = pytest.mark.slow

INTERVAL = 1  # RECOVERY_INTERVAL_SECONDS
LEASE = 3  # SCHEDULER_LEASE_SECONDS
WINDOW = 4.0
RECOVERY = get_cron_job_history_key("jobs.events.recover_events")


def _recoveries(connection: redis.Redis, since: float, until: float = float("inf")) -> int:
    return connection.zcount(RECOVERY, since, until)


def _holder_pid(connection: redis.Redis) -> int | None:
    holder = connection.get(leader_key())
    return None if holder is None else int(holder.decode().split(":")[1])


def _stands_by(stack: Processes, pid: int) -> bool:
    return any(f":{pid}:" in line and "standing by" in line for line in stack.log_tail(20000).splitlines())


def test_two_schedulers_do_the_work_once_and_the_standby_takes_over(
    private_redis, postgresql_database_url, direct, tmp_path
):
    env = {
        "DATABASE_URL": postgresql_database_url,
        "REDIS_URL": private_redis.url,
        "RECOVERY_INTERVAL_SECONDS": str(INTERVAL),
        "SCHEDULER_LEASE_SECONDS": str(LEASE),
    }
    stack = Processes(tmp_path, env)
    connection = redis.Redis.from_url(private_redis.url)
    events, expected = lifecycles("schedulers", 50)
    try:
        stack.web(workers=2)
        stack.worker()
        first, second = stack.scheduler("scheduler-a"), stack.scheduler("scheduler-b")
        wait_for(
            lambda: len(CronScheduler.all(connection)) == 2, 30, f"both schedulers up\n{stack.log_tail()}"
        )
        stream = DeliveryStream(stack.base_url, events, seed=4).start()

        since = time.time()
        time.sleep(WINDOW)
        both = _recoveries(connection, since, time.time())
        # One scheduler's worth (a run every INTERVAL), not two.
        assert 1 <= both <= WINDOW / INTERVAL + 1, (both, stack.log_tail())

        leader_pid = _holder_pid(connection)
        assert leader_pid is not None, "no scheduler holds the lease"
        leader, standby = (first, second) if leader_pid == first.pid else (second, first)
        assert leader.pid == leader_pid
        killed_at = time.time()
        os.kill(leader.pid, signal.SIGKILL)
        taken = wait_for(
            lambda: _recoveries(connection, killed_at) > 0, LEASE + INTERVAL + 10, "the standby takes over"
        )
        assert _holder_pid(connection) == standby.pid

        since = time.time()
        time.sleep(WINDOW / 2)
        alone = _recoveries(connection, since, time.time())
        assert 1 <= alone <= WINDOW / 2 / INTERVAL + 1, alone

        # A rolling deploy: the new scheduler stands by, the old one gets SIGTERM and hands over.
        third = stack.scheduler("scheduler-c")
        wait_for(lambda: _stands_by(stack, third.pid), 30, "the new scheduler stands by")
        termed_at = time.time()
        os.kill(standby.pid, signal.SIGTERM)
        handed = wait_for(lambda: _holder_pid(connection) == third.pid, LEASE, "the lease is handed over")
        wait_for(lambda: _recoveries(connection, termed_at) > 0, INTERVAL + 5, "the new leader runs recovery")
        stream.finish(60)
        check_outcome(direct, stream, expected)
        report(
            "two-schedulers",
            recoveries_in_window=both,
            window_s=WINDOW,
            interval_s=INTERVAL,
            lease_s=LEASE,
            takeover_after_leader_sigkill_s=round(taken, 3),
            takeover_after_leader_sigterm_s=round(handed, 3),
            deliveries=stream.total,
        )
    finally:
        connection.close()
        stack.stop()

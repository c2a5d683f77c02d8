"""Drill: every process (web, worker, scheduler) gets SIGTERM mid-stream, then all start again.

As a platform stops a dyno or a machine: SIGTERM reaches every process of each tree at once
(gunicorn's master and workers, the RQ worker and its work horse, the scheduler). Each exits
within its grace period; a request or a drain cut short is not acknowledged or not committed,
so Stripe's redelivery and the next drain finish the work after the restart.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.drills.stack import (
    DeliveryStream,
    Processes,
    check_outcome,
    first_processed_after,
    lifecycles,
    report,
    wait_for,
)

pytestmark = pytest.mark.slow

NAMES = ("web", "worker", "scheduler")
#: gunicorn's graceful_timeout is 20 s; everything must be gone well within it.
EXIT_BOUND = 20.0


def test_sigterm_to_every_process_mid_stream_then_restart_loses_nothing(
    private_redis, postgresql_database_url, direct, tmp_path
):
    env = {
        "DATABASE_URL": postgresql_database_url,
        "REDIS_URL": private_redis.url,
        "RECOVERY_INTERVAL_SECONDS": "2",
    }
    stack = Processes(tmp_path, env)
    events, expected = lifecycles("sigterm", 50)
    try:
        stack.web(workers=2)
        stack.worker()
        stack.scheduler()
        stream = DeliveryStream(stack.base_url, events, seed=3).start()
        wait_for(lambda: stream.progress() > 0.3, 30, "a third of the stream delivered")
        termed_at = time.monotonic()
        for name in NAMES:
            stack.signal_tree(name, signal.SIGTERM)
        codes = {name: stack.wait_exit(name, EXIT_BOUND) for name in NAMES}
        stopped = time.monotonic() - termed_at
        assert set(codes.values()) <= {0}, (codes, stack.log_tail())

        restart_at = time.time()
        stack.web(workers=2)
        stack.worker()
        stack.scheduler()
        stream.finish(60)
        check_outcome(direct, stream, expected)
        assert all(stack.alive(name) for name in NAMES), stack.log_tail()
        report(
            "sigterm-all",
            all_exited_s=round(stopped, 3),
            exit_codes=codes,
            first_ack_after_restart_s=round(stream.first_ack_after(restart_at), 3),
            first_processed_after_restart_s=round(first_processed_after(direct, restart_at), 3),
            deliveries=stream.total,
        )
    finally:
        stack.stop()

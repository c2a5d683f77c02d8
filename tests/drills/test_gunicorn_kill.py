"""Drill: one gunicorn worker process is SIGKILLed under a stream of signed deliveries.

The requests it held get no answer (Stripe sends them again); the other process keeps answering,
gunicorn's arbiter boots a replacement, and nothing that was acknowledged is lost.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.drills.stack import (
    DeliveryStream,
    Processes,
    check_outcome,
    children,
    lifecycles,
    report,
    wait_for,
    web_beat,
)

pytestmark = pytest.mark.slow


def test_a_gunicorn_worker_killed_mid_stream_loses_nothing(
    private_redis, postgresql_database_url, direct, tmp_path
):
    stack = Processes(tmp_path, {"DATABASE_URL": postgresql_database_url, "REDIS_URL": private_redis.url})
    events, expected = lifecycles("gunicorn", 50)
    try:
        web = stack.web(workers=2)
        stack.worker()
        wait_for(lambda: len(children(web.pid)) == 2, 20, "gunicorn's two workers")
        before = children(web.pid)
        stream = DeliveryStream(stack.base_url, events, seed=1).start()
        wait_for(lambda: stream.progress() > 0.3, 30, "a third of the stream delivered")
        victim = min(before)
        killed_at = time.time()
        os.kill(victim, signal.SIGKILL)
        replaced = wait_for(
            lambda: len(children(web.pid) - before) == 1, 30, "the arbiter forks a replacement"
        )
        (new,) = children(web.pid) - before
        ready = wait_for(lambda: web_beat(direct, new), 30, "the replacement serves (its first heartbeat)")
        stream.finish(60)
        check_outcome(direct, stream, expected)
        assert stack.alive("web") and stack.alive("worker"), stack.log_tail()
        report(
            "gunicorn-worker-kill",
            first_ack_s=round(stream.first_ack_after(killed_at), 3),
            replacement_forked_s=round(replaced, 3),
            replacement_ready_s=round(replaced + ready, 3),
            failed_attempts=stream.failures_after(killed_at),
            deliveries=stream.total,
        )
    finally:
        stack.stop()

"""Drill: PgBouncer (transaction pooling) is killed and started again while deliveries and drains
run through it.

gunicorn and the worker reach PostgreSQL only through a private PgBouncer (tests/pgbouncer.py).
Killing it drops every client and server connection at once: deliveries answer 503 until it is
back (Stripe sends them again), a drain in flight fails and leaves its events queued, and the
pools' dead connections are replaced on the next checkout, with no process restarted.
"""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from tests.conftest import free_port
from tests.drills.stack import (
    DeliveryStream,
    Processes,
    check_outcome,
    first_processed_after,
    lifecycles,
    report,
    wait_for,
)
from tests.pgbouncer import PgBouncer

pytestmark = pytest.mark.slow

#: How long PgBouncer stays away (a restart by a supervisor, or a failover of the pooler).
DOWN_SECONDS = 1.0


@pytest.fixture
def bouncer(postgresql_database_url, tmp_path):
    """A PgBouncer of this drill's own (the run's shared one stays up for the other tests)."""
    url = sa.engine.make_url(postgresql_database_url)
    server = PgBouncer(
        tmp_path / "pgbouncer",
        free_port(),
        url.host or "127.0.0.1",
        url.port or 5432,
        [url.username or "root"],
    )
    server.start()
    yield server
    server.stop()


def test_pgbouncer_restarted_mid_stream_loses_nothing(
    private_redis, postgresql_database_url, direct, bouncer, tmp_path
):
    through = (
        sa.engine.make_url(postgresql_database_url)
        .set(host="127.0.0.1", port=bouncer.port)
        .render_as_string(hide_password=False)
    )
    stack = Processes(tmp_path, {"DATABASE_URL": through, "REDIS_URL": private_redis.url})
    events, expected = lifecycles("pgbouncer", 50)
    try:
        stack.web(workers=2)
        stack.worker()
        stream = DeliveryStream(stack.base_url, events, seed=2).start()
        wait_for(lambda: stream.progress() > 0.3, 30, "a third of the stream delivered")
        killed_at = time.time()
        bouncer.stop()  # SIGKILL: no goodbye to clients or servers
        time.sleep(DOWN_SECONDS)
        bouncer.start()
        back_at = time.time()
        stream.finish(60)
        check_outcome(direct, stream, expected)
        assert stack.alive("web") and stack.alive("worker"), stack.log_tail()
        report(
            "pgbouncer-restart",
            down_s=round(back_at - killed_at, 3),
            first_ack_after_back_s=round(stream.first_ack_after(back_at), 3),
            first_processed_after_back_s=round(first_processed_after(direct, back_at), 3),
            failed_attempts=stream.failures_after(killed_at),
            deliveries=stream.total,
        )
    finally:
        stack.stop()

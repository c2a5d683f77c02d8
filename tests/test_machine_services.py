"""The machine's own PostgreSQL and Redis (what .ci/run checks), used the way production uses them."""

import uuid

import redis
from rq import Queue

from webhook_service.processing.queue import create_queue

MACHINE_REDIS = "redis://127.0.0.1:6379/0"


def test_machine_redis_round_trip_through_our_queue():
    """Enqueue and run a job on 127.0.0.1:6379 under a unique queue name; nothing else is touched."""
    from rq import SimpleWorker

    name = f"ci-check-{uuid.uuid4().hex[:10]}"
    events = create_queue(MACHINE_REDIS, name, (1,))
    events.ping()
    assert events.request_drain() is True and events.request_drain() is False  # the ticket coalesces
    events.queue.empty()  # drop that drain job: it needs an app, and this test has none
    job = events.queue.enqueue("builtins.len", "abc", job_id=f"{name}-job", result_ttl=5)
    try:
        worker = SimpleWorker([Queue(name, connection=events.connection)], connection=events.connection)
        worker.work(burst=True, logging_level="WARNING")
        assert job.latest_result().return_value == 3
    finally:
        connection = redis.Redis.from_url(MACHINE_REDIS)
        for key in connection.scan_iter(f"*{name}*"):
            connection.delete(key)
        events.queue.delete(delete_jobs=True)

"""RQ on Redis, or on an in-process fakeredis for dev/demo; the same code path either way.

Two kinds of jobs (see docs/design.md):
- `drain_events`: takes queued events from the event log in batches. The receiver asks for one
  through a coalescing *ticket*, so a burst of 10,000 deliveries costs one SET NX each and a
  handful of jobs, not 10,000 jobs at ~59 Redis commands apiece.
- `process_event(event_id)`: one event, with RQ's retry and backoff; for retries and replays.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus

from webhook_service.core.errors import ConfigError
from webhook_service.core.retry import RetryPolicy

logger = logging.getLogger(__name__)

#: A ticket outlives a drain job that never started (its enqueue failed) by at most this long.
DRAIN_TICKET_TTL_SECONDS = 60
#: A drain processes batches until the log is empty; this bounds one job's run.
DRAIN_JOB_TIMEOUT_SECONDS = 1800
#: Per-event jobs touch one invoice; anything longer is stuck.
EVENT_JOB_TIMEOUT_SECONDS = 120
#: Keep finished drains briefly for `rq info`; a drain's result is a small dict.
DRAIN_RESULT_TTL_SECONDS = 60
#: Failed per-event jobs stay in the failed registry for replay; the event log keeps them forever.
FAILURE_TTL_SECONDS = 30 * 24 * 3600
#: Redis calls in the request path fail fast so the receiver can answer 503 within Stripe's patience.
REDIS_SOCKET_TIMEOUT_SECONDS = 2.0

DRAIN_FUNC = "jobs.events.drain_events"
#: Drain jobs are named this plus a random suffix (event jobs are named by their event id).
DRAIN_JOB_PREFIX = "drain-"
EVENT_FUNC = "jobs.events.process_event"
_FINISHED_STATES = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}


@dataclass
class EventQueue:
    """The app's RQ queue plus the drain ticket; built once by `create_queue`."""

    connection: redis.Redis
    queue: Queue
    retry_intervals: tuple[int, ...]
    embedded: bool = False

    @property
    def retry_policy(self) -> RetryPolicy:
        """The one retry policy (core/retry.py) over the configured intervals."""
        return RetryPolicy(self.retry_intervals)

    @property
    def ticket_key(self) -> str:
        return f"webhook-service:{self.queue.name}:drain-ticket"

    def ping(self) -> None:
        """Raise a redis error if the queue is unreachable."""
        self.connection.ping()

    def request_drain(self) -> bool:
        """Make sure a drain job will run after this call; return whether one was enqueued.

        A drain deletes the ticket when it starts, so an event committed before this call is
        either seen by a running drain or triggers a new one: no wakeup is lost.
        """
        if not self.connection.set(self.ticket_key, b"1", nx=True, ex=DRAIN_TICKET_TTL_SECONDS):
            return False
        try:
            self.enqueue_drain()
        except redis.RedisError:
            self.connection.delete(self.ticket_key)
            raise
        return True

    def take_ticket(self) -> None:
        """Called by a starting drain: later deliveries must request a new one."""
        self.connection.delete(self.ticket_key)

    def enqueue_drain(self) -> Job:
        """Enqueue a drain job unconditionally (recovery uses this; drains are idempotent)."""
        return self.queue.enqueue(
            DRAIN_FUNC,
            job_id=f"{DRAIN_JOB_PREFIX}{uuid.uuid4().hex}",
            job_timeout=DRAIN_JOB_TIMEOUT_SECONDS,
            result_ttl=DRAIN_RESULT_TTL_SECONDS,
            failure_ttl=FAILURE_TTL_SECONDS,
        )

    def enqueue_event(self, event_id: str, delay_seconds: int = 0, retries_left: int | None = None) -> bool:
        """Schedule a per-event job under the event's id; False if one is already pending.

        `retries_left` is the event's (stripe_events.retries_left; None: the whole schedule): the job
        gets the intervals the retry policy still has for it. A finished or failed job under the
        same id is replaced, so replays always run.
        """
        intervals = list(self.retry_policy.remaining(retries_left))
        options = {
            "job_id": event_id,
            "unique": True,
            "job_timeout": EVENT_JOB_TIMEOUT_SECONDS,
            "failure_ttl": FAILURE_TTL_SECONDS,
            "retry": Retry(max=len(intervals), interval=intervals) if intervals else None,
        }
        for _ in range(2):
            try:
                if delay_seconds > 0:
                    self.queue.enqueue_in(timedelta(seconds=delay_seconds), EVENT_FUNC, event_id, **options)
                else:
                    self.queue.enqueue(EVENT_FUNC, event_id, **options)
                return True
            except DuplicateJobError:
                if not self._discard_finished_job(event_id):
                    return False
        return False

    def _discard_finished_job(self, job_id: str) -> bool:
        try:
            job = Job.fetch(job_id, connection=self.connection)
        except NoSuchJobError:
            return True
        if job.get_status(refresh=False) not in _FINISHED_STATES:
            return False
        job.delete()
        return True


def _embedded_connection() -> redis.Redis:
    """An in-process fakeredis: imported only here, so production processes never load it."""
    try:
        import fakeredis
    except ImportError:
        raise ConfigError(
            "REDIS_URL is not set and the embedded dev queue is not installed: set REDIS_URL, "
            "or install it with `pip install 'webhook-service[embedded]'` (development only)"
        ) from None
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


def create_queue(redis_url: str | None, queue_name: str, retry_intervals: Sequence[int]) -> EventQueue:
    """Connect to Redis, or build the embedded in-process queue when no URL is given."""
    connection: redis.Redis
    if redis_url is None:
        connection = _embedded_connection()
        embedded = True
    else:
        try:
            connection = redis.Redis.from_url(
                redis_url,
                socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
            )
        except ValueError as exc:
            raise ConfigError(f"REDIS_URL is not a valid Redis URL: {exc}") from None
        embedded = False
    return EventQueue(
        connection=connection,
        queue=Queue(queue_name, connection=connection),
        retry_intervals=tuple(retry_intervals),
        embedded=embedded,
    )

"""RQ jobs for events: batch drains, and single events with retry and backoff."""

from __future__ import annotations

import time

import sentry_sdk
from rq import get_current_job

from webhook_service.core.errors import error_summary
from webhook_service.processing import attempts, drain, pause, recovery
from webhook_service.web.services import get_services


class JobFailed(Exception):
    """What a job raises instead of the original error: its type and first line, no SQL.

    RQ logs and stores the text of whatever a job raises, and Sentry receives it; SQLAlchemy's
    messages end with the statement and its parameter values (customer emails and names).
    """


def _sanitized(exc: Exception) -> JobFailed:
    return JobFailed(error_summary(exc)).with_traceback(exc.__traceback__)


def drain_events() -> dict:
    """Process queued events from the event log until it has none left."""
    services = get_services()
    batch_size = services.config.drain_batch_size
    try:
        return drain.drain(services.db, services.queue, batch_size, fetching=services.fetching).as_dict()
    except Exception as exc:
        raise _sanitized(exc) from None


def process_event(event_id: str) -> str:
    """Process one event (retry or replay). Failures are recorded in the event log, then re-raised
    so RQ retries with backoff and, when retries are spent, keeps the job in its failed registry.

    The retry policy decides, from the retries the event has left in the log; the job's RQ retry
    settings are set to carry out that decision, so RQ and the log never disagree."""
    services = get_services()
    with services.db.sessions() as session:
        if pause.is_paused(session):
            # Left as it is (retrying, due): `resume` re-enqueues retries that came due meanwhile.
            return "paused"
    job = get_current_job()
    sentry_sdk.set_tag("stripe.event_id", event_id)
    sentry_sdk.set_tag("stripe.event_type", attempts.event_type_of(services.db, event_id))
    started = time.perf_counter()
    try:
        return attempts.process_one(services.db, event_id, services.fetching)
    except Exception as exc:
        policy = services.queue.retry_policy
        decision = attempts.record_attempt_failure(services.db, event_id, exc, policy, started)
        if job is not None:
            job.retries_left = 1 if decision.retrying else 0  # no retry: straight to the failed registry
            job.retry_intervals = [decision.delay or 0]
        raise _sanitized(exc) from None


def recover_events() -> dict:
    """Re-enqueue work the queue lost (scheduled by the scheduler process)."""
    services = get_services()
    if pause.get_state(services.db).paused:
        return {"paused": True}  # nothing would run; `resume` does this work when it comes
    return recovery.recover(services.db, services.queue)

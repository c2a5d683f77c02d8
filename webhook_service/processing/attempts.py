"""Single-event attempts: one event in its own transaction, its failure recorded, its retry scheduled."""

from __future__ import annotations

import logging
import math
import time
import traceback
from datetime import timedelta

import orjson
import redis
import sqlalchemy as sa

import handlers
from webhook_service.core.errors import PermanentEventError, error_summary
from webhook_service.core.models import EventStatus, StripeEvent, utcnow
from webhook_service.core.retry import RetryDecision, RetryPolicy
from webhook_service.processing import eventlog, locks
from webhook_service.processing.db import Database
from webhook_service.processing.enrich import Fetching
from webhook_service.processing.outcomes import log_outcome
from webhook_service.processing.queue import EventQueue

logger = logging.getLogger("webhook_service.events")


class EventFailed(Exception):
    """A single-event attempt failed; the event log already records why."""


def process_one(db: Database, event_id: str, fetching: Fetching | None = None) -> str:
    """Process one event in its own transaction; a no-op when it is already done.

    With `fetching`, its snapshot is first completed from Stripe (processing/enrich.py); a fetch
    that keeps failing raises `StripeUnavailable`, so the event is retried like any failure.

    :return: "processed", or "skipped" when the event was already processed or ignored.
    :raises PermanentEventError: the event can never be processed as it is.
    :raises Exception: whatever the handler raised; nothing was changed.
    """
    started = time.perf_counter()
    with db.sessions() as session, session.begin():
        row = eventlog.lock_event(session, event_id)
        if row is None:
            raise PermanentEventError(f"event {event_id} is not in the event log")
        if row.status in (EventStatus.PROCESSED.value, EventStatus.IGNORED.value):
            return "skipped"
        event = handlers.read(orjson.loads(row.payload))  # PermanentEventError before any row is locked
        if fetching is not None:  # a plain copy: handle() reads it again, what Stripe returned too
            event = fetching.enricher().enrich(session, dict(event))
        locks.lock_related_rows(session, [event])
        handlers.handle(event, session)
        attempt, event_type = (row.attempts or 0) + 1, row.type
        eventlog.mark_processed(session, [row])
    log_outcome(event_id, event_type, "processed", (time.perf_counter() - started) * 1000, attempt)
    return "processed"


def record_attempt_failure(
    db: Database,
    event_id: str,
    exc: BaseException,
    policy: RetryPolicy | None,
    started: float | None = None,
) -> RetryDecision:
    """Write the failure to the event log, with what the retry policy decides from the retries the
    event has left; `policy=None` means no retry can follow (nothing would run it).

    A `PermanentEventError` is never retried. `started` is the attempt's `time.perf_counter()`
    start, for the log line's duration.
    """
    error = error_summary(exc)  # first line, no SQL or parameter values: operators see this
    with db.sessions() as session, session.begin():
        left = session.scalar(
            sa.select(StripeEvent.retries_left).where(StripeEvent.id == event_id).with_for_update()
        )
        if policy is None:
            decision = RetryDecision(delay=None, retries_left=0)
        else:
            decision = policy.after_failure(left, permanent=isinstance(exc, PermanentEventError))
            decision = honour_retry_after(decision, exc)
        retry_in = decision.delay
        next_at = utcnow() + timedelta(seconds=retry_in) if retry_in is not None else None
        eventlog.record_failure(
            session, event_id, error, next_at, decision.retries_left, traceback=traceback_of(exc)
        )
        row = session.get(StripeEvent, event_id)
        event_type, attempts = (row.type, row.attempts) if row else ("?", 0)
    outcome = "retrying" if retry_in is not None else "failed"
    duration = (time.perf_counter() - started) * 1000 if started is not None else None
    log_outcome(event_id, event_type, outcome, duration, attempts, error=error, retry_in=retry_in)
    return decision


def honour_retry_after(decision: RetryDecision, exc: BaseException) -> RetryDecision:
    """A retry no sooner than Stripe asked (`StripeUnavailable.retry_after`, from its Retry-After)."""
    asked = getattr(exc, "retry_after", None)
    if not decision.retrying or not isinstance(asked, int | float):
        return decision
    return RetryDecision(delay=max(decision.delay or 0, math.ceil(asked)), retries_left=decision.retries_left)


#: Frames kept per exception: the innermost ones, where the handler failed.
TRACEBACK_FRAMES = 30


def traceback_of(exc: BaseException) -> str:
    """Where `exc` happened, safe to store and show: each frame's file, line, function and source
    line, and the exception types of the chain. No messages, no local values, no SQL or parameters
    (a message can quote customer data; `last_error` keeps the first line for operators)."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = traceback.extract_tb(current.__traceback__)[-TRACEBACK_FRAMES:]
        lines = [f'  File "{f.filename}", line {f.lineno}, in {f.name}' for f in frames]
        lines = [line + (f"\n    {f.line}" if f.line else "") for line, f in zip(lines, frames, strict=True)]
        kind = type(current)
        parts.append("\n".join(lines + [f"{kind.__module__}.{kind.__qualname__}"]))
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return "\n\nwhile handling it, or caused by it:\n".join(reversed(parts))


def attempt_in_drain(
    db: Database, queue: EventQueue, event_id: str, fetching: Fetching | None = None
) -> bool:
    """Try one event of a failed batch; on failure hand it to a per-event job with backoff."""
    started = time.perf_counter()
    try:
        return process_one(db, event_id, fetching) in ("processed", "skipped")
    except Exception as exc:  # noqa: BLE001 - the reason is recorded and the event retried (or failed)
        decision = record_attempt_failure(db, event_id, exc, queue.retry_policy, started)
        # No retry left (or a permanent error): one more run that fails at once puts the event,
        # with its reason, in RQ's failed registry.
        schedule(queue, event_id, delay=decision.delay or 0, retries_left=decision.retries_left)
    return False


def schedule(queue: EventQueue, event_id: str, delay: int, retries_left: int) -> None:
    try:
        queue.enqueue_event(event_id, delay_seconds=delay, retries_left=retries_left)
    except redis.RedisError:
        # The event log says `retrying` with a due time; recovery enqueues it once Redis is back.
        logger.warning("could not schedule a retry for %s; recovery will pick it up", event_id)


def event_type_of(db: Database, event_id: str) -> str | None:
    """The logged type of an event (for tagging errors), or None if it is not logged."""
    with db.sessions() as session:
        return session.scalar(sa.select(StripeEvent.type).where(StripeEvent.id == event_id))

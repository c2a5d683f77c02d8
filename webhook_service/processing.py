"""Turning accepted events into mirror rows: batch drains, single-event attempts, recovery.

Exactly-once effect comes from the database, not the queue: an event's changes and its
`processed` mark commit in one transaction, so a crash anywhere leaves it `queued` and a
later drain redoes it from scratch; handlers are idempotent merges, so redoing is harmless.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta

import orjson
import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session

import handlers
from webhook_service import eventlog
from webhook_service.db import Database
from webhook_service.errors import PermanentEventError
from webhook_service.models import EventStatus, StripeEvent, utcnow
from webhook_service.queue import EventQueue

logger = logging.getLogger("webhook_service.events")

#: Queued events older than this with no drain in sight are picked up by recovery.
STALE_QUEUED_AFTER = timedelta(seconds=30)
#: A retry is presumed lost (Redis restarted empty) this long after it was due.
LOST_RETRY_GRACE = timedelta(seconds=120)


@dataclass
class DrainResult:
    """What one drain job did."""

    processed: int = 0
    batches: int = 0
    failed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"processed": self.processed, "batches": self.batches, "failed": self.failed}


class EventFailed(Exception):
    """A single-event attempt failed; the event log already records why."""


def drain(db: Database, queue: EventQueue, batch_size: int, max_batches: int | None = None) -> DrainResult:
    """Process queued events in batches until none are left (or `max_batches` ran)."""
    queue.take_ticket()
    result = DrainResult()
    while max_batches is None or result.batches < max_batches:
        claimed = _drain_batch(db, queue, batch_size)
        if claimed is None:
            break
        result.batches += 1
        ok_ids, failed_ids = claimed
        result.processed += len(ok_ids)
        for event_id in failed_ids:
            if _attempt_in_drain(db, queue, event_id):
                result.processed += 1
            else:
                result.failed.append(event_id)
    return result


def _drain_batch(db: Database, queue: EventQueue, batch_size: int) -> tuple[list[str], list[str]] | None:
    """One transaction over a batch. Returns (processed ids, ids to try one by one), or None when empty."""
    started = time.perf_counter()
    ids: list[str] = []
    with db.sessions() as session:
        try:
            with session.begin():
                rows = eventlog.claim_queued(session, batch_size)
                if not rows:
                    return None
                ids = [row.id for row in rows]
                if len(rows) == batch_size:
                    _invite_helper(queue)
                parsed = [(row, orjson.loads(row.payload)) for row in rows]
                parsed = _leave_contended(session, parsed)
                rows = [row for row, _ in parsed]
                ids = [row.id for row in rows]
                # Grouped by object, newest first: handlers are order-free, and this way only the
                # winning snapshot of each invoice is copied into its row; older ones just merge
                # what they say about status history.
                parsed.sort(key=lambda p: (p[0].object_id or "", -(p[1].get("created") or 0), p[0].id))
                events = [event for _, event in parsed]
                handlers.lock_related_rows(session, events)
                for event in events:
                    handlers.handle(event, session)
                summaries = [(row.id, row.type, (row.attempts or 0) + 1) for row in rows]
                eventlog.mark_processed(session, rows)
        except Exception as exc:  # one bad event must not block the others: retry them one by one
            session.rollback()
            if not ids:
                raise  # nothing was claimed: the database itself is failing
            logger.warning(
                "batch of %d failed (%s); processing its events one by one", len(ids), type(exc).__name__
            )
            return [], ids
    elapsed_ms = (time.perf_counter() - started) * 1000 / max(len(ids), 1)
    for event_id, event_type, attempt in summaries:
        _log_outcome(event_id, event_type, "processed", elapsed_ms, attempt)
    return ids, []


#: First half of the advisory-lock keys drains use (the second is `hashtext` of a row's key).
_DRAIN_LOCK_NAMESPACE = 0x57485331


Parsed = list[tuple[StripeEvent, dict]]


def _leave_contended(session: Session, parsed: Parsed) -> Parsed:
    """Keep the events whose rows no other drain is working on; leave the rest queued for later.

    Two drains claim different events (SKIP LOCKED), but their events often share rows: an
    invoice whose lifecycle straddles two batches, a customer with invoices in both. Each would
    then wait for the other's whole batch to commit, and two drains would run one after the other.
    So a drain first takes a non-blocking advisory lock per row key and processes only the events
    whose keys it got. The row locks taken after this stay what makes concurrent drains correct;
    the advisory locks only steer drains apart (a hash collision costs a deferral, nothing else).
    If another drain holds every event's keys, the batch goes ahead as a whole and waits for it,
    as it would without this step, so deferred events are never stranded.
    """
    if session.get_bind().dialect.name != "postgresql" or len(parsed) < 2:
        return parsed
    keys = [handlers.related_keys(event) for _, event in parsed]
    wanted = sorted(set().union(*keys))
    if not wanted:
        return parsed
    got = dict(
        session.execute(
            sa.text(
                "SELECT k, pg_try_advisory_xact_lock(:ns, hashtext(k)) "
                "FROM unnest(CAST(:keys AS text[])) AS k"
            ),
            {"ns": _DRAIN_LOCK_NAMESPACE, "keys": wanted},
        ).all()
    )
    kept = [item for item, event_keys in zip(parsed, keys, strict=True) if all(got[k] for k in event_keys)]
    return kept or parsed


def _invite_helper(queue: EventQueue) -> None:
    """A full batch means a backlog: ask for another drain so an idle worker can join in."""
    try:
        queue.request_drain()
    except redis.RedisError:
        logger.warning("could not request a helper drain; this drain continues alone")


def process_one(db: Database, event_id: str) -> str:
    """Process one event in its own transaction; a no-op when it is already done.

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
        event = orjson.loads(row.payload)
        handlers.lock_related_rows(session, [event])
        handlers.handle(event, session)
        attempt, event_type = (row.attempts or 0) + 1, row.type
        eventlog.mark_processed(session, [row])
    _log_outcome(event_id, event_type, "processed", (time.perf_counter() - started) * 1000, attempt)
    return "processed"


def record_attempt_failure(
    db: Database, event_id: str, exc: BaseException, retry_in: int | None, started: float | None = None
) -> None:
    """Write the failure to the event log; `retry_in=None` means no retry will follow.

    `started` is the attempt's `time.perf_counter()` start, for the log line's duration.
    """
    error = f"{type(exc).__name__}: {exc}"
    next_at = utcnow() + timedelta(seconds=retry_in) if retry_in is not None else None
    with db.sessions() as session, session.begin():
        eventlog.record_failure(session, event_id, error, next_at)
        row = session.get(StripeEvent, event_id)
        event_type, attempts = (row.type, row.attempts) if row else ("?", 0)
    outcome = "retrying" if retry_in is not None else "failed"
    duration = (time.perf_counter() - started) * 1000 if started is not None else None
    _log_outcome(event_id, event_type, outcome, duration, attempts, error=error, retry_in=retry_in)


def _attempt_in_drain(db: Database, queue: EventQueue, event_id: str) -> bool:
    """Try one event of a failed batch; on failure hand it to a per-event job with backoff."""
    started = time.perf_counter()
    try:
        return process_one(db, event_id) in ("processed", "skipped")
    except PermanentEventError as exc:
        record_attempt_failure(db, event_id, exc, None, started)
        # One more run that fails at once puts the event, with its reason, in RQ's failed registry.
        _schedule(queue, event_id, delay=0, retries=())
    except Exception as exc:  # noqa: BLE001 - the reason is recorded and the event retried
        intervals = queue.retry_intervals
        delay = intervals[0] if intervals else None
        record_attempt_failure(db, event_id, exc, delay, started)
        _schedule(queue, event_id, delay=delay or 0, retries=intervals[1:])
    return False


def _schedule(queue: EventQueue, event_id: str, delay: int, retries) -> None:
    try:
        queue.enqueue_event(event_id, delay_seconds=delay, retries=retries)
    except redis.RedisError:
        # The event log says `retrying` with a due time; recovery enqueues it once Redis is back.
        logger.warning("could not schedule a retry for %s; recovery will pick it up", event_id)


def recover(
    db: Database,
    queue: EventQueue,
    stale_after: timedelta = STALE_QUEUED_AFTER,
    lost_after: timedelta = LOST_RETRY_GRACE,
) -> dict:
    """Re-enqueue what the event log says is owed but the queue may have lost (e.g. Redis restarted empty)."""
    with db.sessions() as session:
        stale = eventlog.stale_queued_exist(session, stale_after)
        lost = eventlog.overdue_retries(session, lost_after)
    if stale:
        queue.enqueue_drain()
    rescheduled = sum(1 for event_id in lost if queue.enqueue_event(event_id, retries=()))
    if stale or rescheduled:
        logger.info(
            "recovery: drain %s, %d lost retries re-enqueued",
            "enqueued" if stale else "not needed",
            rescheduled,
        )
    return {"drain": stale, "retries": rescheduled}


def event_type_of(db: Database, event_id: str) -> str | None:
    """The logged type of an event (for tagging errors), or None if it is not logged."""
    with db.sessions() as session:
        return session.scalar(sa.select(StripeEvent.type).where(StripeEvent.id == event_id))


def pending_count(db: Database) -> int:
    """Events accepted but not yet processed (queued or waiting for a retry)."""
    with db.sessions() as session:
        stmt = sa.select(sa.func.count()).where(StripeEvent.status.in_(eventlog.PENDING_STATUSES))
        return session.scalar(stmt) or 0


def _log_outcome(event_id, event_type, outcome, duration_ms, attempt, **extra) -> None:
    fields = {"event_id": event_id, "type": event_type, "outcome": outcome, "attempt": attempt}
    if duration_ms is not None:
        fields["duration_ms"] = round(duration_ms, 2)
    fields.update({k: v for k, v in extra.items() if v is not None})
    logger.info("event %s", outcome, extra={"fields": fields})

"""Batch drains: claim queued events, apply them in one transaction, fall back to one at a time.

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
from webhook_service.core.errors import PermanentEventError, StripeAPIError
from webhook_service.core.models import StripeEvent, utcnow
from webhook_service.core.retry import RetryDecision
from webhook_service.processing import eventlog, locks, pause
from webhook_service.processing.attempts import attempt_in_drain, honour_retry_after, schedule
from webhook_service.processing.db import Database, lost_connection
from webhook_service.processing.enrich import Fetching
from webhook_service.processing.locks import Parsed
from webhook_service.processing.outcomes import log_outcome
from webhook_service.processing.queue import EventQueue

logger = logging.getLogger("webhook_service.events")


@dataclass
class DrainResult:
    """What one drain job did."""

    processed: int = 0
    batches: int = 0
    failed: list[str] = field(default_factory=list)
    #: The drain stopped because an operator paused processing (processing/pause.py).
    paused: bool = False

    def as_dict(self) -> dict:
        return {
            "processed": self.processed,
            "batches": self.batches,
            "failed": self.failed,
            "paused": self.paused,
        }


def drain(
    db: Database,
    queue: EventQueue,
    batch_size: int,
    max_batches: int | None = None,
    fetching: Fetching | None = None,
) -> DrainResult:
    """Process queued events in batches until none are left, `max_batches` ran, or processing is paused.

    :param fetching: Stripe API access to complete snapshots first (processing/enrich.py).
    """
    queue.take_ticket()
    result = DrainResult()
    failed_batches = 0
    while max_batches is None or result.batches < max_batches:
        claimed = _drain_batch(db, queue, batch_size, fetching, may_set_aside=failed_batches < MAX_SET_ASIDE)
        if claimed is _PAUSED:
            result.paused = True
            break
        if claimed is None:
            break
        result.batches += 1
        ok_ids, failed_ids, deferred = claimed
        if failed_ids:  # failed batches in a row: one that commits starts the count again
            failed_batches += 1
        elif ok_ids:
            failed_batches = 0
        result.processed += len(ok_ids)
        for event_id, decision in deferred:
            schedule(queue, event_id, delay=decision.delay or 0, retries_left=decision.retries_left)
            result.failed.append(event_id)
        for event_id in failed_ids:
            if attempt_in_drain(db, queue, event_id, fetching):
                result.processed += 1
            else:
                result.failed.append(event_id)
    return result


#: What `_drain_batch` returns when processing is paused.
_PAUSED = "paused"

#: How many failed batches in a row set a failing type aside before a drain falls back to one by
#: one for the whole batch: each retry of the rest costs a batch (and, with STRIPE_API_KEY set,
#: its fetches again), and a failure that is not the type's own (an autoflush of another event's
#: writes, a statement timeout, a deadlock) names whichever type was being handled.
MAX_SET_ASIDE = 3


Claimed = tuple[list[str], list[str], list[tuple[str, RetryDecision]]]


def _drain_batch(
    db: Database, queue: EventQueue, batch_size: int, fetching: Fetching | None, may_set_aside: bool = True
):
    """One transaction over a batch. Returns (processed ids, ids to try one by one, events whose
    fetch from Stripe failed with their retry delay), None when nothing is queued, or _PAUSED
    (checked in the batch's transaction, before claiming). A failed fetch is recorded in the
    batch's own transaction, so its event cannot be lost between the commit and its retry.

    When a handler fails, the batch is rolled back and only the events of the failing event's
    type are tried one by one (`may_set_aside`); the rest stay queued for the next batch. A bad
    deploy usually breaks one type, and one by one for a whole batch of 500 costs 500
    transactions where the rest, retried together, costs one.
    """
    started = time.perf_counter()
    ids: list[str] = []
    failing: dict | None = None
    kinds: dict[str, str] = {}
    deferred: list[tuple[str, RetryDecision]] = []
    refused: list[tuple[StripeEvent, str]] = []
    with db.sessions() as session:
        try:
            with session.begin():
                if not pause.batch_may_start(session):
                    return _PAUSED
                rows = eventlog.claim_queued(session, batch_size)
                if not rows:
                    return None
                ids = [row.id for row in rows]
                if len(rows) == batch_size:
                    _invite_helper(queue)
                parsed, refused = _read_all(rows)
                for row, error in refused:  # fails for good here, without touching the batch's rows
                    eventlog.record_failure(session, row.id, error, None)
                parsed = locks.leave_contended(session, parsed)
                # Before any copy: ties are settled from the logged snapshots as read.
                handlers.expect_batch([event for _, event in parsed], session)
                rows = [row for row, _ in parsed]
                ids = [row.id for row in rows]
                # Grouped by object, newest first: handlers are order-free, and this way only the
                # winning snapshot of each invoice is copied into its row; older ones just merge
                # what they say about status history.
                parsed.sort(key=lambda p: (p[0].object_id or "", -(p[1].get("created") or 0), p[0].id))
                if fetching is not None:  # plain copies: handle() reads them again, fetched data too
                    parsed = [(row, dict(event)) for row, event in parsed]
                    parsed, deferred = _enrich(session, fetching, parsed, queue)
                    rows = [row for row, _ in parsed]
                    ids = [row.id for row in rows]
                events = [event for _, event in parsed]
                locks.lock_related_rows(session, events)
                kinds = {row.id: row.type for row in rows}  # plain values: a rollback expires rows
                for event in events:
                    failing = event
                    handlers.handle(event, session)
                failing = None
                summaries = [(row.id, row.type, (row.attempts or 0) + 1) for row in rows]
                eventlog.mark_processed(session, rows)
        except Exception as exc:  # one bad event must not block the others: retry them one by one
            session.rollback()
            if not ids or lost_connection(exc):
                # The database itself is failing: one by one would only wait on it once per event.
                # The events stay queued; recovery enqueues a drain once it answers again.
                raise
            kind = failing.get("type") if failing is not None and may_set_aside else None
            alike = [i for i in ids if kind is not None and kinds.get(i) == kind] or ids
            logger.warning(
                "batch of %d failed (%s); processing %s one by one",
                len(ids),
                type(exc).__name__,
                f"its {len(alike)} {kind} events" if len(alike) < len(ids) else "its events",
            )
            return [], alike, []
    elapsed_ms = (time.perf_counter() - started) * 1000 / max(len(ids), 1)
    for event_id, event_type, attempt in summaries:
        log_outcome(event_id, event_type, "processed", elapsed_ms, attempt)
    for row, error in refused:
        log_outcome(row.id, row.type, "failed", None, (row.attempts or 0) + 1, error=error)
        # As for any permanent failure: one run that fails at once puts it in RQ's failed registry.
        schedule(queue, row.id, delay=0, retries_left=0)
    return ids, [], deferred


def _enrich(session: Session, fetching: Fetching, parsed: Parsed, queue: EventQueue):
    """Complete each snapshot from Stripe; an event whose fetch fails leaves the batch to retry later."""
    enricher = fetching.enricher()
    kept: Parsed = []
    deferred: list[tuple[str, RetryDecision]] = []
    for row, event in parsed:
        try:
            kept.append((row, enricher.enrich(session, event)))
        except StripeAPIError as exc:
            decision = honour_retry_after(queue.retry_policy.after_failure(row.retries_left), exc)
            error = f"{type(exc).__name__}: {exc}"
            next_at = utcnow() + timedelta(seconds=decision.delay) if decision.delay is not None else None
            eventlog.record_failure(session, row.id, error, next_at, decision.retries_left)
            outcome = "retrying" if decision.retrying else "failed"
            attempt = (row.attempts or 0) + 1
            log_outcome(row.id, row.type, outcome, None, attempt, error=error, retry_in=decision.delay)
            deferred.append((row.id, decision))
    return kept, deferred


def _read_all(rows: list[StripeEvent]) -> tuple[locks.Parsed, list[tuple[StripeEvent, str]]]:
    """Each claimed event through its declared reading (no database work): the readable ones,
    and the others with the error that fails them permanently at this first attempt. So a bad
    event never rolls back its batch, and is never retried as if the failure were transient."""
    parsed: locks.Parsed = []
    refused: list[tuple[StripeEvent, str]] = []
    for row in rows:
        try:
            parsed.append((row, handlers.read(orjson.loads(row.payload))))
        except PermanentEventError as exc:
            refused.append((row, f"{type(exc).__name__}: {exc}"))
    return parsed, refused


def _invite_helper(queue: EventQueue) -> None:
    """A full batch means a backlog: ask for another drain so an idle worker can join in."""
    try:
        queue.request_drain()
    except redis.RedisError:
        logger.warning("could not request a helper drain; this drain continues alone")


def pending_count(db: Database) -> int:
    """Events accepted but not yet processed (queued or waiting for a retry)."""
    with db.sessions() as session:
        stmt = sa.select(sa.func.count()).where(StripeEvent.status.in_(eventlog.PENDING_STATUSES))
        return session.scalar(stmt) or 0

"""Batch drains: claim queued events, apply them in one transaction, fall back to one at a time.

Exactly-once effect comes from the database, not the queue: an event's changes and its
`processed` mark commit in one transaction, so a crash anywhere leaves it `queued` and a
later drain redoes it from scratch; handlers are idempotent merges, so redoing is harmless.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import orjson
import redis
import sqlalchemy as sa

import handlers
from webhook_service.core.models import StripeEvent
from webhook_service.processing import eventlog, locks, pause
from webhook_service.processing.attempts import attempt_in_drain
from webhook_service.processing.db import Database, lost_connection
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


def drain(db: Database, queue: EventQueue, batch_size: int, max_batches: int | None = None) -> DrainResult:
    """Process queued events in batches until none are left, `max_batches` ran, or processing is paused."""
    queue.take_ticket()
    result = DrainResult()
    while max_batches is None or result.batches < max_batches:
        claimed = _drain_batch(db, queue, batch_size)
        if claimed is _PAUSED:
            result.paused = True
            break
        if claimed is None:
            break
        result.batches += 1
        ok_ids, failed_ids = claimed
        result.processed += len(ok_ids)
        for event_id in failed_ids:
            if attempt_in_drain(db, queue, event_id):
                result.processed += 1
            else:
                result.failed.append(event_id)
    return result


#: What `_drain_batch` returns when processing is paused.
_PAUSED = "paused"


def _drain_batch(db: Database, queue: EventQueue, batch_size: int):
    """One transaction over a batch. Returns (processed ids, ids to try one by one), None when
    nothing is queued, or _PAUSED (checked in the batch's transaction, before claiming)."""
    started = time.perf_counter()
    ids: list[str] = []
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
                parsed = [(row, orjson.loads(row.payload)) for row in rows]
                parsed = locks.leave_contended(session, parsed)
                rows = [row for row, _ in parsed]
                ids = [row.id for row in rows]
                # Grouped by object, newest first: handlers are order-free, and this way only the
                # winning snapshot of each invoice is copied into its row; older ones just merge
                # what they say about status history.
                parsed.sort(key=lambda p: (p[0].object_id or "", -(p[1].get("created") or 0), p[0].id))
                events = [event for _, event in parsed]
                locks.lock_related_rows(session, events)
                for event in events:
                    handlers.handle(event, session)
                summaries = [(row.id, row.type, (row.attempts or 0) + 1) for row in rows]
                eventlog.mark_processed(session, rows)
        except Exception as exc:  # one bad event must not block the others: retry them one by one
            session.rollback()
            if not ids or lost_connection(exc):
                # The database itself is failing: one by one would only wait on it once per event.
                # The events stay queued; recovery enqueues a drain once it answers again.
                raise
            logger.warning(
                "batch of %d failed (%s); processing its events one by one", len(ids), type(exc).__name__
            )
            return [], ids
    elapsed_ms = (time.perf_counter() - started) * 1000 / max(len(ids), 1)
    for event_id, event_type, attempt in summaries:
        log_outcome(event_id, event_type, "processed", elapsed_ms, attempt)
    return ids, []


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

"""Recovery: re-enqueue what the event log says is owed but the queue may have lost."""

from __future__ import annotations

import logging
from datetime import timedelta

import sqlalchemy as sa
from rq.exceptions import NoSuchJobError
from rq.registry import FailedJobRegistry

from webhook_service.core.models import EventStatus, StripeEvent
from webhook_service.processing import eventlog
from webhook_service.processing.db import Database
from webhook_service.processing.queue import DRAIN_JOB_PREFIX, EventQueue

logger = logging.getLogger("webhook_service.events")

#: Queued events older than this with no drain in sight are picked up by recovery.
STALE_QUEUED_AFTER = timedelta(seconds=30)
#: A retry is presumed lost (Redis restarted empty) this long after it was due. Short: RQ's
#: scheduler moves a due retry within a second, and re-enqueueing one that is still in Redis is a
#: no-op (the job id is the event id, `unique`), so a lost retry fires within its interval plus
#: the recovery interval plus this.
LOST_RETRY_GRACE = timedelta(seconds=10)


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
    # A lost retry comes back with the retries the event had left (the policy reads them from the log).
    rescheduled = sum(1 for event_id, left in lost if queue.enqueue_event(event_id, retries_left=left))
    cleared = clear_settled_failures(db, queue)
    if stale or rescheduled or cleared:
        logger.info(
            "recovery: drain %s, %d lost retries re-enqueued, %d settled jobs left the failed registry",
            "enqueued" if stale else "not needed",
            rescheduled,
            cleared,
        )
    return {"drain": stale, "retries": rescheduled, "cleared": cleared}


def clear_settled_failures(db: Database, queue: EventQueue) -> int:
    """Remove from RQ's failed registry the jobs whose work is done or owed elsewhere.

    A failed drain (the database was away) leaves nothing behind: its events stayed queued and
    a later drain processed them. A failed per-event job whose event is now processed or ignored
    is history. Left in place they would show in /readyz and the metrics for 30 days as if
    something were still wrong. Per-event jobs of events still failed stay, for replay.
    """
    registry = FailedJobRegistry(queue=queue.queue)
    job_ids = registry.get_job_ids()
    if not job_ids:
        return 0
    drains = [job_id for job_id in job_ids if job_id.startswith(DRAIN_JOB_PREFIX)]
    with db.sessions() as session:
        settled = set(
            session.scalars(
                sa.select(StripeEvent.id).where(
                    StripeEvent.id.in_([j for j in job_ids if j not in drains]),
                    StripeEvent.status.in_((EventStatus.PROCESSED.value, EventStatus.IGNORED.value)),
                )
            )
        )
    cleared = 0
    for job_id in drains + sorted(settled):
        try:
            registry.remove(job_id, delete_job=True)
            cleared += 1
        except NoSuchJobError:
            registry.remove(job_id)  # the hash expired already; drop the registry entry
    return cleared

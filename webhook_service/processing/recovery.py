"""Recovery: re-enqueue what the event log says is owed but the queue may have lost."""

from __future__ import annotations

import logging
from datetime import timedelta

from webhook_service.processing import eventlog
from webhook_service.processing.db import Database
from webhook_service.processing.queue import EventQueue

logger = logging.getLogger("webhook_service.events")

#: Queued events older than this with no drain in sight are picked up by recovery.
STALE_QUEUED_AFTER = timedelta(seconds=30)
#: A retry is presumed lost (Redis restarted empty) this long after it was due.
LOST_RETRY_GRACE = timedelta(seconds=120)


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
    if stale or rescheduled:
        logger.info(
            "recovery: drain %s, %d lost retries re-enqueued",
            "enqueued" if stale else "not needed",
            rescheduled,
        )
    return {"drain": stale, "retries": rescheduled}

"""Accepting deliveries: record them durably and wake a drain, for concurrent requests at once.

The receiver's whole cost beyond Flask is one committed INSERT and one Redis SET NX. Requests of one
process that arrive together share both (group_commit.py): one INSERT for all their rows, one commit,
one drain request. Each request still answers only after its own row is committed.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis
import sqlalchemy as sa

from webhook_service.core.models import EventStatus
from webhook_service.processing import eventlog
from webhook_service.processing.envelope import Envelope
from webhook_service.processing.group_commit import GroupCommitter
from webhook_service.processing.queue import EventQueue

#: Rows per INSERT; a group is at most as large as the process's concurrent requests anyway.
MAX_GROUP = 32


class Intake:
    """Accept deliveries for one app (one per process; thread-safe)."""

    def __init__(self, engine: sa.Engine, queue: EventQueue, max_group: int = MAX_GROUP):
        self._engine = engine
        self._queue = queue
        self._committer: GroupCommitter[tuple[Envelope, bytes], bool] = GroupCommitter(self._write, max_group)

    def accept(self, envelope: Envelope, body: bytes) -> bool:
        """Record one delivery and make sure a drain will see it; return whether it was new.

        :raises eventlog.EventLogUnavailable: not recorded; the caller answers 503.
        :raises redis.RedisError: recorded, but no drain could be requested; the caller answers 503
            (the queue is down), and Stripe's retry is then a duplicate that succeeds.
        """
        return self._committer.submit((envelope, body))

    def _write(self, deliveries: Sequence[tuple[Envelope, bytes]]) -> list[bool | BaseException]:
        inserted = eventlog.record_events(self._engine, deliveries)  # raises for the whole group
        queued = [envelope.status is EventStatus.QUEUED for envelope, _body in deliveries]
        if not any(queued):
            return list(inserted)
        try:
            self._queue.request_drain()
        except redis.RedisError as exc:
            # Only deliveries that need a drain fail; ignored events are fully accepted already.
            return [exc if needs_drain else new for new, needs_drain in zip(inserted, queued, strict=True)]
        return list(inserted)

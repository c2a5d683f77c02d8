"""Accepting deliveries: record them durably and wake a drain, for concurrent requests at once.

The receiver's whole cost beyond Flask is one committed INSERT and one Redis SET NX. Requests of one
process that arrive together share both (group_commit.py): one INSERT for all their rows, one commit,
one drain request. Each request still answers only after its own row is committed.

Stripe must get an answer within 10 s however the database behaves (SPEC: a database that stops
answering gets a 503, not a hang), and /healthz must keep answering, so every wait here is bounded:
a write waits at most ANSWER_SECONDS for PostgreSQL; a delivery waits at most WAIT_SECONDS for the
write carrying it; after a write waited in vain for the database, deliveries fail at once for
COOLDOWN_SECONDS (one probe at a time finds out when it is back, instead of every thread waiting
its full bound); and at most `max_inside` deliveries (one fewer than the request threads) are in
here at once, so a thread stays free for the health checks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import redis
import sqlalchemy as sa

from webhook_service.core.models import EventStatus
from webhook_service.processing import eventlog
from webhook_service.processing.bounded import answer_within
from webhook_service.processing.db import is_connection_error
from webhook_service.processing.envelope import Envelope
from webhook_service.processing.group_commit import GroupCommitter, GroupWaitTimeout
from webhook_service.processing.queue import EventQueue

#: Rows per INSERT; a group is at most as large as the process's concurrent requests anyway.
MAX_GROUP = 32
#: A write's wait for PostgreSQL's answer (a fresh connection adds its connect_timeout).
ANSWER_SECONDS = 4.0
#: A delivery's wait for the write that carries its row, before it answers 503.
WAIT_SECONDS = 8.0
#: After the database did not answer, deliveries get a 503 at once for this long.
COOLDOWN_SECONDS = 1.0
#: A write in flight this long means the database is slow: deliveries beyond `max_inside` get a
#: 503 at once instead of waiting for a place (and a thread).
SLOW_WRITE_SECONDS = 0.5


class Intake:
    """Accept deliveries for one app (one per process; thread-safe)."""

    def __init__(self, engine: sa.Engine, queue: EventQueue, max_group: int = MAX_GROUP, max_inside: int = 7):
        self._engine = engine
        self._queue = queue
        self._committer: GroupCommitter[tuple[Envelope, bytes], bool] = GroupCommitter(self._write, max_group)
        self._max_inside = max(1, max_inside)
        self._inside = 0
        self._places = threading.Condition()
        self._write_started: float | None = None
        self._unavailable_until = 0.0

    def accept(self, envelope: Envelope, body: bytes) -> bool:
        """Record one delivery and make sure a drain will see it; return whether it was new.

        :raises eventlog.EventLogUnavailable: not recorded (or not known to be); the caller
            answers 503.
        :raises redis.RedisError: recorded, but no drain could be requested; the caller answers 503
            (the queue is down), and Stripe's retry is then a duplicate that succeeds.
        """
        self._enter()
        try:
            return self._committer.submit((envelope, body), timeout=WAIT_SECONDS)
        except GroupWaitTimeout:
            raise eventlog.EventLogUnavailable("database too slow: no answer in time") from None
        finally:
            self._leave()

    def _enter(self) -> None:
        with self._places:
            give_up = time.monotonic() + SLOW_WRITE_SECONDS
            while self._inside >= self._max_inside:
                now, started = time.monotonic(), self._write_started
                if now >= give_up or (started is not None and now - started > SLOW_WRITE_SECONDS):
                    raise eventlog.EventLogUnavailable("database too slow: every place is waiting")
                self._places.wait(min(give_up - now, 0.05))
            self._inside += 1

    def _leave(self) -> None:
        with self._places:
            self._inside -= 1
            self._places.notify()

    def _write(self, deliveries: Sequence[tuple[Envelope, bytes]]) -> list[bool | BaseException]:
        if time.monotonic() < self._unavailable_until:
            raise eventlog.EventLogUnavailable("database unreachable a moment ago")
        started = self._write_started = time.monotonic()
        try:
            with answer_within(ANSWER_SECONDS):
                inserted = eventlog.record_events(self._engine, deliveries)  # raises for the whole group
        except eventlog.EventLogUnavailable as exc:
            # Only a database that let us wait: one that refuses at once costs nothing to retry.
            slow = time.monotonic() - started > SLOW_WRITE_SECONDS
            if slow and is_connection_error(exc.__cause__):
                self._unavailable_until = time.monotonic() + COOLDOWN_SECONDS
            raise
        finally:
            self._write_started = None
        queued = [envelope.status is EventStatus.QUEUED for envelope, _body in deliveries]
        if not any(queued):
            return list(inserted)
        try:
            self._queue.request_drain()
        except redis.RedisError as exc:
            # Only deliveries that need a drain fail; ignored events are fully accepted already.
            return [exc if needs_drain else new for new, needs_drain in zip(inserted, queued, strict=True)]
        return list(inserted)

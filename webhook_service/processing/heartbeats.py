"""Heartbeats: each web, worker and scheduler process writes when it was last alive.

In the database, like the counters, so /metrics shows every machine's processes and still
answers when Redis is down. One row per process (host and pid); rows of processes that have
been silent for a day are removed by the next beat, so the table stays as small as the fleet.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webhook_service.core.models import ProcessHeartbeat, utcnow
from webhook_service.core.sql import dialect_insert
from webhook_service.processing.db import Database

logger = logging.getLogger(__name__)

ROLES = ("web", "worker", "scheduler")
#: How often a process beats at most (a worker also beats when RQ's loop wakes, at least every minute).
BEAT_INTERVAL_SECONDS = 10.0
#: A process that has not beaten for this long counts as gone (three missed worker beats).
ALIVE_WITHIN = timedelta(seconds=180)
#: Rows of processes silent for this long are deleted.
FORGET_AFTER = timedelta(days=1)


def process_name() -> str:
    """This process, as the heartbeat table names it."""
    return f"{socket.gethostname()}:{os.getpid()}"[:255]


def beat(db: Database, role: str, now: datetime | None = None) -> None:
    """Record that this process, in `role`, is alive now."""
    now = now or utcnow()
    with db.sessions() as session, session.begin():
        insert = dialect_insert(session.get_bind().dialect.name, ProcessHeartbeat)
        stmt = insert.values(process=process_name(), role=role, beat_at=now, started_at=now)
        session.execute(stmt.on_conflict_do_update(index_elements=["process", "role"], set_={"beat_at": now}))
        session.execute(sa.delete(ProcessHeartbeat).where(ProcessHeartbeat.beat_at < now - FORGET_AFTER))


@dataclass(frozen=True)
class RoleHealth:
    """What the heartbeats say about one role."""

    last_beat: datetime | None
    alive: int


def by_role(session: Session, now: datetime | None = None) -> dict[str, RoleHealth]:
    """The latest beat and the number of live processes of each role (every role, even with none)."""
    cutoff = (now or utcnow()) - ALIVE_WITHIN
    alive = sa.func.count().filter(ProcessHeartbeat.beat_at >= cutoff)
    stmt = sa.select(ProcessHeartbeat.role, sa.func.max(ProcessHeartbeat.beat_at), alive).group_by(
        ProcessHeartbeat.role
    )
    found = {role: RoleHealth(last, int(count)) for role, last, count in session.execute(stmt)}
    return {role: found.get(role, RoleHealth(None, 0)) for role in sorted({*ROLES, *found})}


class Heartbeat:
    """Beats for one process at most every `interval` seconds; a failed write is logged, never raised.

    Workers and the scheduler call `maybe_beat` from their main loops (see workers.py): a process
    whose loop is stuck stops beating, which is the point.
    """

    def __init__(self, db: Database, role: str, interval: float = BEAT_INTERVAL_SECONDS):
        self.db = db
        self.role = role
        self.interval = interval
        self.pid = os.getpid()
        self._last = float("-inf")

    def maybe_beat(self) -> None:
        now = time.monotonic()
        if now - self._last < self.interval or os.getpid() != self.pid:
            return  # too soon, or a forked child (an RQ work-horse is not a worker process of its own)
        self._last = now
        try:
            beat(self.db, self.role)
        except sa.exc.SQLAlchemyError as exc:
            logger.warning("heartbeat not recorded (%s); the database is unreachable", type(exc).__name__)

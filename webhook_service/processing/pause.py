"""Pausing processing: drains stop at a batch boundary while the receiver keeps recording.

The switch is a row in `service_flags`, so it holds for every worker on every machine and
survives Redis losing its data (unlike `rq suspend`, which is a Redis key and is checked only
between jobs: a drain already running would carry on through the whole backlog).

A drain checks the switch inside each batch's transaction, before it claims anything. On
PostgreSQL it first takes a shared advisory lock that `pause` takes exclusively, so `pause`
returns only once the batches already in flight have committed, and no batch starts after it.
(SQLite serialises writers, which gives the same order.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session

from webhook_service.core.models import ServiceFlag, utcnow
from webhook_service.core.sql import dialect_insert
from webhook_service.processing import audit, recovery
from webhook_service.processing.db import Database
from webhook_service.processing.queue import EventQueue

logger = logging.getLogger(__name__)

PAUSED_FLAG = "processing_paused"
#: Advisory-lock key of the batch gate (drains share it; `pause` takes it alone).
_GATE_LOCK = (0x57485333, 1)


@dataclass(frozen=True)
class PauseState:
    """Whether processing is paused, since when, by whom and why."""

    paused: bool
    since: datetime | None = None
    by: str | None = None
    reason: str | None = None

    def as_dict(self) -> dict:
        return {
            "paused": self.paused,
            "since": self.since.isoformat() if self.since else None,
            "by": self.by,
            "reason": self.reason,
        }


def is_paused(session: Session) -> bool:
    """One primary-key lookup; what drains ask before each batch."""
    return session.scalar(sa.select(ServiceFlag.name).where(ServiceFlag.name == PAUSED_FLAG)) is not None


def get_state(db: Database) -> PauseState:
    """The current pause state, for `/readyz`, `/metrics`, the CLI and the console."""
    with db.sessions() as session:
        row = session.get(ServiceFlag, PAUSED_FLAG)
        if row is None:
            return PauseState(paused=False)
        return PauseState(paused=True, since=row.set_at, by=row.set_by, reason=row.reason)


def batch_may_start(session: Session) -> bool:
    """Called by a drain in its batch transaction before claiming: False when paused."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.select(sa.func.pg_advisory_xact_lock_shared(*_GATE_LOCK)))
    return not is_paused(session)


def pause(db: Database, *, actor: str, reason: str | None = None) -> PauseState:
    """Stop drains at their next batch boundary; idempotent (a second pause keeps the first's time)."""
    with db.sessions() as session, session.begin():
        dialect = session.get_bind().dialect.name
        session.execute(
            dialect_insert(dialect, ServiceFlag)
            .values(name=PAUSED_FLAG, set_by=actor[:255], set_at=utcnow(), reason=reason)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        audit.record(session, actor=actor, action="pause", parameters={"reason": reason} if reason else {})
        if dialect == "postgresql":
            # Waits for every batch that passed the gate before the flag was visible.
            session.execute(sa.select(sa.func.pg_advisory_xact_lock(*_GATE_LOCK)))
    logger.warning("processing paused by %s", actor)
    return get_state(db)


def resume(db: Database, queue: EventQueue, *, actor: str) -> PauseState:
    """Let drains run again and start one now for the backlog; retries held back are re-enqueued."""
    with db.sessions() as session, session.begin():
        row = session.get(ServiceFlag, PAUSED_FLAG)
        was = {"paused_since": row.set_at.isoformat(), "paused_by": row.set_by} if row else {"paused": False}
        session.execute(sa.delete(ServiceFlag).where(ServiceFlag.name == PAUSED_FLAG))
        audit.record(session, actor=actor, action="resume", result=was)
    logger.warning("processing resumed by %s", actor)
    try:
        queue.enqueue_drain()
        # Retries that came due while paused were skipped by their jobs; queue them again now.
        recovery.recover(db, queue, stale_after=timedelta(0), lost_after=timedelta(0))
    except redis.RedisError:
        logger.warning("resumed, but Redis is unreachable: the scheduler's recovery starts the drains")
    return get_state(db)

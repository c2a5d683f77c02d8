"""The event log: the durable copy of every accepted event, and the work list of the drain."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webhook_service.db import dialect_insert
from webhook_service.envelope import Envelope
from webhook_service.models import EventStatus, StripeEvent, utcnow

#: Statuses that mean "still owed processing".
PENDING_STATUSES = (EventStatus.QUEUED.value, EventStatus.RETRYING.value)
#: Errors are stored for operators; a traceback's tail is what matters and rows stay small.
MAX_ERROR_LENGTH = 4000


def record_event(engine: sa.Engine, envelope: Envelope, payload: bytes, now: datetime | None = None) -> bool:
    """Insert the event once; return False when its id was already in the log (a duplicate).

    One statement, committed before the caller answers Stripe: this is what "accepted" means.
    """
    received = now or utcnow()
    values = {
        "id": envelope.id,
        "type": envelope.type,
        "api_version": envelope.api_version,
        "livemode": envelope.livemode,
        "account": envelope.account,
        "object_id": envelope.object_id,
        "created": envelope.created,
        "received_at": received,
        "status": envelope.status.value,
        "attempts": 0,
        "ignored_reason": envelope.ignored_reason,
        "processed_at": received if envelope.status is EventStatus.IGNORED else None,
        "payload": payload.decode("utf-8"),
    }
    stmt = (
        dialect_insert(engine.dialect.name, StripeEvent)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(StripeEvent.id)
    )
    if engine.dialect.name != "postgresql":
        with engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE (db.py) serialises writers
            return conn.execute(stmt).first() is not None
    for attempt in (1, 2):
        try:
            # One statement is atomic and durable on its own: autocommit saves the BEGIN and COMMIT
            # round trips (the receiver's hot path); the INSERT returns only once it is committed.
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                return conn.execute(stmt).first() is not None
        except sa.exc.DBAPIError as exc:
            # A pooled connection the server had dropped (restart, idle timeout): the pool is now
            # discarded, and a fresh connection may succeed. The INSERT is idempotent on the id.
            if attempt == 2 or not exc.connection_invalidated:
                raise
    raise AssertionError("unreachable")


def claim_queued(session: Session, limit: int) -> list[StripeEvent]:
    """Lock up to `limit` queued events, oldest first, skipping rows another drain holds."""
    stmt = (
        sa.select(StripeEvent)
        .where(StripeEvent.status == EventStatus.QUEUED.value)
        .order_by(StripeEvent.received_at, StripeEvent.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(stmt))


def lock_event(session: Session, event_id: str) -> StripeEvent | None:
    """Lock one event row for a single-event attempt (waits for a drain that holds it)."""
    return session.scalars(sa.select(StripeEvent).where(StripeEvent.id == event_id).with_for_update()).first()


def mark_processed(session: Session, events: Sequence[StripeEvent], now: datetime | None = None) -> None:
    """Record success for events this transaction has processed: one UPDATE for the whole batch.

    The loaded rows are not refreshed (`synchronize_session=False`); callers read nothing from
    them afterwards but what they noted before.
    """
    ids = [event.id for event in events]
    session.execute(
        sa.update(StripeEvent)
        .where(StripeEvent.id.in_(ids))
        .values(
            status=EventStatus.PROCESSED.value,
            attempts=StripeEvent.attempts + 1,
            processed_at=now or utcnow(),
            next_attempt_at=None,  # last_error stays: what the earlier attempts hit
        )
        .execution_options(synchronize_session=False)
    )


def record_failure(
    session: Session,
    event_id: str,
    error: str,
    next_attempt_at: datetime | None,
) -> bool:
    """Record a failed attempt in its own transaction; `next_attempt_at=None` means retries are over.

    Guarded on status so a concurrent success is never overwritten. Returns whether a row changed.
    """
    status = EventStatus.RETRYING.value if next_attempt_at else EventStatus.FAILED.value
    result = session.execute(
        sa.update(StripeEvent)
        .where(
            StripeEvent.id == event_id, StripeEvent.status.in_(PENDING_STATUSES + (EventStatus.FAILED.value,))
        )
        .values(
            status=status,
            attempts=StripeEvent.attempts + 1,
            last_error=error[-MAX_ERROR_LENGTH:],
            next_attempt_at=next_attempt_at,
        )
    )
    return result.rowcount == 1


def stale_queued_exist(session: Session, older_than: timedelta) -> bool:
    """Whether queued events have waited longer than a drain should take to notice them."""
    cutoff = utcnow() - older_than
    stmt = sa.select(StripeEvent.id).where(
        StripeEvent.status == EventStatus.QUEUED.value, StripeEvent.received_at < cutoff
    )
    return session.scalars(stmt.limit(1)).first() is not None


def overdue_retries(session: Session, grace: timedelta, limit: int = 1000) -> list[str]:
    """Ids of events whose scheduled retry should have run by now (its job was lost)."""
    cutoff = utcnow() - grace
    stmt = (
        sa.select(StripeEvent.id)
        .where(StripeEvent.status == EventStatus.RETRYING.value, StripeEvent.next_attempt_at < cutoff)
        .order_by(StripeEvent.next_attempt_at)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def count_by_status(session: Session) -> dict[str, int]:
    """How many events stand in each status."""
    rows = session.execute(sa.select(StripeEvent.status, sa.func.count()).group_by(StripeEvent.status))
    return {status: count for status, count in rows}

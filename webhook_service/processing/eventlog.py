"""The event log: the durable copy of every accepted event, and the work list of the drain."""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from datetime import datetime, timedelta

import psycopg
import sqlalchemy as sa
from sqlalchemy.orm import Session

from webhook_service.core.models import EventStatus, StripeEvent, utcnow
from webhook_service.core.sql import dialect_insert
from webhook_service.processing import counters
from webhook_service.processing.db import is_connection_error
from webhook_service.processing.envelope import Envelope

#: Statuses that mean "still owed processing".
PENDING_STATUSES = (EventStatus.QUEUED.value, EventStatus.RETRYING.value)
#: Errors are stored for operators; a traceback's tail is what matters and rows stay small.
MAX_ERROR_LENGTH = 4000
#: A pooled connection that fails this soon is one the server dropped earlier: retry on a fresh one.
RETRY_DROPPED_WITHIN_SECONDS = 1.0
#: Shares of the backlog that drains take whole (many more than drains, so each finds a free one).
LOCK_PARTITIONS = 16
#: How many of the oldest queued events a drain looks at to choose its share.
PARTITION_SAMPLE = 2000
#: First half of the advisory-lock key a drain holds on its share (processing.py uses another).
_PARTITION_LOCK_NAMESPACE = 0x57485332


#: Columns the receiver writes, with their PostgreSQL array types for the batch INSERT; the rest
#: keep their defaults until a drain touches the row.
_RECORD_COLUMNS = {
    "id": "text", "type": "text", "api_version": "text", "livemode": "boolean", "account": "text",
    "object_id": "text", "created": "timestamptz", "received_at": "timestamptz", "status": "text",
    "attempts": "integer", "ignored_reason": "text", "processed_at": "timestamptz", "payload": "text",
    "lock_partition": "smallint",
}  # fmt: skip
#: The receiver's statement on PostgreSQL: one INSERT for a whole batch of deliveries (one array per
#: column, so the statement text never changes), run on the raw connection; never prepared
#: server-side, which PgBouncer in transaction mode could not keep (db.py). Arrays go in binary
#: (`%b`): psycopg's text format escapes each payload with a regex, which cost more than
#: everything else in the request. Built through SQLAlchemy, a single-row INSERT cost four times
#: the CPU of this one (docs/benchmarks.md).
#: The same statement adds the new events to the received and ignored counters (processing/counters.py,
#: one shard, the last parameter), so a count moves exactly when its event is committed.
_PG_RECORD_SQL = (
    f"WITH new AS (INSERT INTO {StripeEvent.__tablename__} ({', '.join(_RECORD_COLUMNS)}) "
    f"SELECT * FROM unnest({', '.join(f'%b::{kind}[]' for kind in _RECORD_COLUMNS.values())}) "
    "ON CONFLICT (id) DO NOTHING RETURNING id, type, status), "
    f"counted AS (INSERT INTO {counters.TABLE} (name, label, shard, value) "
    "SELECT kind.name, new.type, %s::smallint, count(*) FROM new CROSS JOIN LATERAL (VALUES "
    f"('{counters.RECEIVED}'), (CASE WHEN new.status = '{EventStatus.IGNORED.value}' "
    f"THEN '{counters.IGNORED}' END)) AS kind(name) "
    "WHERE kind.name IS NOT NULL GROUP BY kind.name, new.type ORDER BY kind.name, new.type "
    f"ON CONFLICT (name, label, shard) DO UPDATE SET value = {counters.TABLE}.value + EXCLUDED.value) "
    "SELECT id FROM new"
)
assert set(_RECORD_COLUMNS) <= set(StripeEvent.__table__.columns.keys())


class EventLogUnavailable(Exception):
    """The database could not record the event; the receiver answers 503 so Stripe retries."""


def record_event(engine: sa.Engine, envelope: Envelope, payload: bytes, now: datetime | None = None) -> bool:
    """Insert the event once; return False when its id was already in the log (a duplicate).

    :raises EventLogUnavailable: the database did not answer, or refused the row.
    """
    return record_events(engine, [(envelope, payload)], now)[0]


def record_events(
    engine: sa.Engine, deliveries: Sequence[tuple[Envelope, bytes]], now: datetime | None = None
) -> list[bool]:
    """Insert each event once, all in one commit; say per delivery whether it was new.

    The commit happens before this returns: this is what "accepted" means. The same id twice in
    one batch counts as new once (the first), as if the deliveries had come one after the other.

    :raises EventLogUnavailable: the database did not answer, or refused a row.
    """
    received = now or utcnow()
    rows = [_row(envelope, payload, received) for envelope, payload in deliveries]
    if engine.dialect.name == "postgresql":
        new_ids = _insert_postgres(engine, rows)
    else:
        new_ids = _insert_generic(engine, rows)
    outcome = []
    for envelope, _payload in deliveries:
        outcome.append(envelope.id in new_ids)
        new_ids.discard(envelope.id)  # a second delivery of the same id in the batch is a duplicate
    return outcome


def _row(envelope: Envelope, payload: bytes, received: datetime) -> dict:
    return {
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
        "lock_partition": lock_partition_of(envelope.owner_id),
    }


def lock_partition_of(owner_id: str | None) -> int | None:
    """The backlog share of an event: a stable hash of the customer (or object) it belongs to.

    Every event of one customer lands in the same share, so drains working on different shares
    never need the same invoice or customer rows. Only steering: row locks keep drains correct.
    """
    return None if owner_id is None else zlib.crc32(owner_id.encode()) % LOCK_PARTITIONS


def _insert_generic(engine: sa.Engine, rows: list[dict]) -> set[str]:
    insert = dialect_insert(engine.dialect.name, StripeEvent)
    new_ids: set[str] = set()
    try:
        with engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE (db.py) serialises writers
            for row in rows:
                stmt = (
                    insert.values(**row)
                    .on_conflict_do_nothing(index_elements=["id"])
                    .returning(StripeEvent.id)
                )
                new_ids.update(conn.execute(stmt).scalars())
            counters.add(conn, counters.received_deltas(row for row in rows if row["id"] in new_ids))
    except sa.exc.SQLAlchemyError as exc:
        if not is_connection_error(exc):
            raise  # a bug or schema drift: a 500 that gets reported, not a quiet 503
        raise EventLogUnavailable(type(exc).__name__) from exc
    return new_ids


def _insert_postgres(engine: sa.Engine, rows: list[dict]) -> set[str]:
    params = [[row[name] for row in rows] for name in _RECORD_COLUMNS] + [counters.shard()]
    started = time.monotonic()
    for attempt in (1, 2):
        try:
            pooled = engine.raw_connection()
        except (psycopg.Error, sa.exc.DBAPIError, sa.exc.TimeoutError) as exc:  # down, refusing, or busy
            raise EventLogUnavailable(type(exc).__name__) from exc
        conn = pooled.driver_connection
        assert isinstance(conn, psycopg.Connection)
        try:
            # One statement is atomic and durable on its own: autocommit saves the BEGIN and COMMIT
            # round trips; the INSERT returns only once it is committed.
            conn.autocommit = True
            try:
                return {row[0] for row in conn.execute(_PG_RECORD_SQL, params)}
            finally:
                if not conn.closed:
                    conn.autocommit = False  # the pool hands out transactional connections
        except psycopg.Error as exc:
            if not is_connection_error(exc):
                raise  # a bug or schema drift: a 500 that gets reported, not a quiet 503
            dropped = conn.closed or conn.broken
            if dropped:
                # A pooled connection the server had dropped (restart, idle timeout): discard it and
                # try once more on a fresh one. The INSERT is idempotent on the id.
                pooled.invalidate(exc)
            # Only a connection found dead at once is worth a second try; one that went quiet
            # (closed by the answer timeout, bounded.py) would cost a second full wait.
            quick = time.monotonic() - started < RETRY_DROPPED_WITHIN_SECONDS
            if attempt == 2 or not dropped or not quick:
                raise EventLogUnavailable(type(exc).__name__) from exc
        finally:
            pooled.close()
    raise AssertionError("unreachable")


def claim_queued(session: Session, limit: int) -> list[StripeEvent]:
    """Lock up to `limit` queued events, oldest first, skipping rows another drain holds.

    On PostgreSQL a drain first takes whole shares of the backlog (`lock_partition`) that no other
    drain holds, the shares of the oldest queued events first, until the batch is full: concurrent
    drains then work on different customers instead of waiting for each other's row locks. Only
    when no free share offers anything (events logged before shares existed, every share taken)
    does it claim without one.
    """
    queued = sa.select(StripeEvent).where(StripeEvent.status == EventStatus.QUEUED.value)
    rows: list[StripeEvent] = []
    if session.get_bind().dialect.name == "postgresql":
        for partition in _partitions_by_age(session):
            if len(rows) >= limit:
                break
            taken = session.execute(
                sa.select(sa.func.pg_try_advisory_xact_lock(_PARTITION_LOCK_NAMESPACE, partition))
            ).scalar()
            if taken:
                share = queued.where(StripeEvent.lock_partition == partition)
                rows += session.scalars(_oldest(share, limit - len(rows)))
    return rows or list(session.scalars(_oldest(queued, limit)))


def _oldest(stmt: sa.Select, limit: int) -> sa.Select:
    ordered = stmt.order_by(StripeEvent.received_at, StripeEvent.id)
    return ordered.limit(limit).with_for_update(skip_locked=True)


def _partitions_by_age(session: Session) -> list[int]:
    """The shares holding the oldest queued events, oldest first (a bounded index scan, not a count)."""
    sample = (
        sa.select(StripeEvent.lock_partition)
        .where(StripeEvent.status == EventStatus.QUEUED.value, StripeEvent.lock_partition.is_not(None))
        .order_by(StripeEvent.received_at, StripeEvent.id)
        .limit(PARTITION_SAMPLE)
    )
    return list(dict.fromkeys(session.scalars(sample)))


def lock_event(session: Session, event_id: str) -> StripeEvent | None:
    """Lock one event row for a single-event attempt (waits for a drain that holds it)."""
    return session.scalars(sa.select(StripeEvent).where(StripeEvent.id == event_id).with_for_update()).first()


def mark_processed(session: Session, events: Sequence[StripeEvent], now: datetime | None = None) -> None:
    """Record success for events this transaction has processed: one UPDATE for the whole batch.

    The loaded rows are not refreshed (`synchronize_session=False`); callers read nothing from
    them afterwards but what they noted before.
    """
    ids = [event.id for event in events]
    now = now or utcnow()
    counters.add(session, counters.processed_deltas(events, now))  # reads attempts before the UPDATE
    session.execute(
        sa.update(StripeEvent)
        .where(StripeEvent.id.in_(ids))
        .values(
            status=EventStatus.PROCESSED.value,
            attempts=StripeEvent.attempts + 1,
            processed_at=now,
            next_attempt_at=None,  # last_error stays: what the earlier attempts hit
            retries_left=None,  # the episode is over; a later replay starts a fresh schedule
        )
        .execution_options(synchronize_session=False)
    )


def record_failure(
    session: Session,
    event_id: str,
    error: str,
    next_attempt_at: datetime | None,
    retries_left: int = 0,
    traceback: str | None = None,
) -> bool:
    """Record a failed attempt in its own transaction; `next_attempt_at=None` means retries are over.

    `retries_left`: what the retry policy left the event after the retry scheduled at `next_attempt_at`.
    `traceback` is where it failed, frames and exception types only (attempts.traceback_of).

    Guarded on status so a concurrent success is never overwritten. Returns whether a row changed.
    Counts a retry, or a final failure when the event was not failed already (an event that fails
    again in the job that files it in RQ's failed registry is one failure, not two).
    """
    status = EventStatus.RETRYING.value if next_attempt_at else EventStatus.FAILED.value
    before = session.execute(
        sa.select(StripeEvent.status, StripeEvent.type).where(StripeEvent.id == event_id).with_for_update()
    ).first()
    result = session.execute(
        sa.update(StripeEvent)
        .where(
            StripeEvent.id == event_id, StripeEvent.status.in_(PENDING_STATUSES + (EventStatus.FAILED.value,))
        )
        .values(
            status=status,
            attempts=StripeEvent.attempts + 1,
            last_error=error[-MAX_ERROR_LENGTH:],
            last_traceback=traceback[-MAX_ERROR_LENGTH:] if traceback else None,
            next_attempt_at=next_attempt_at,
            retries_left=retries_left if next_attempt_at else 0,
        )
    )
    changed = result.rowcount == 1  # type: ignore[attr-defined]  # an UPDATE's CursorResult
    if changed and before is not None and (status == EventStatus.RETRYING.value or before.status != status):
        counters.add(session, {(counters.RETRIED if next_attempt_at else counters.FAILED, before.type): 1})
    return changed


def stale_queued_exist(session: Session, older_than: timedelta) -> bool:
    """Whether queued events have waited longer than a drain should take to notice them."""
    cutoff = utcnow() - older_than
    stmt = sa.select(StripeEvent.id).where(
        StripeEvent.status == EventStatus.QUEUED.value, StripeEvent.received_at < cutoff
    )
    return session.scalars(stmt.limit(1)).first() is not None


def overdue_retries(session: Session, grace: timedelta, limit: int = 1000) -> list[tuple[str, int | None]]:
    """(id, retries left) of events whose scheduled retry should have run by now (its job was lost)."""
    cutoff = utcnow() - grace
    stmt = (
        sa.select(StripeEvent.id, StripeEvent.retries_left)
        .where(StripeEvent.status == EventStatus.RETRYING.value, StripeEvent.next_attempt_at < cutoff)
        .order_by(StripeEvent.next_attempt_at)
        .limit(limit)
    )
    return [(event_id, retries_left) for event_id, retries_left in session.execute(stmt)]


def count_by_status(session: Session) -> dict[str, int]:
    """How many events stand in each status."""
    rows = session.execute(sa.select(StripeEvent.status, sa.func.count()).group_by(StripeEvent.status))
    return {status: count for status, count in rows}

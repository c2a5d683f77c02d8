"""What is still owed processing, read in bounded time whatever the size of the event log.

Every figure is the first entry of an index range or a count capped at `COUNT_CAP` index entries
(ix_stripe_events_status_received, ix_stripe_events_retry_due): work proportional to the backlog
at most, never to the processed and ignored events that make up almost all of the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webhook_service.core.models import EventStatus, StripeEvent, utcnow
from webhook_service.processing import snapshots

#: Counts stop here (a gauge reading 100000 means "at least"); 100k index entries take ~10 ms.
COUNT_CAP = 100_000


@dataclass(frozen=True)
class Backlog:
    """The backlog at one instant. Ages in seconds, 0 when there is nothing of that kind."""

    queued: int
    retrying: int
    overdue: int  #: retrying events whose retry is past due
    failed: int  #: failed for good, waiting for a replay
    age_seconds: float  #: since the oldest queued or retrying event was received
    retry_overdue_seconds: float  #: how far past its due time the most overdue retry is


def _first(column, *conditions):
    return sa.select(column).where(*conditions).order_by(column).limit(1).scalar_subquery()


def _count(*conditions):
    capped = sa.select(sa.literal(1)).select_from(StripeEvent).where(*conditions).limit(COUNT_CAP).subquery()
    return sa.select(sa.func.count()).select_from(capped).scalar_subquery()


def read(session: Session, now: datetime | None = None) -> Backlog:
    """One round trip of bounded index lookups."""
    now = now or utcnow()
    status = StripeEvent.status
    queued, retrying = status == EventStatus.QUEUED.value, status == EventStatus.RETRYING.value
    overdue = (retrying, StripeEvent.next_attempt_at < now)
    row = session.execute(
        sa.select(
            _first(StripeEvent.received_at, queued),
            _first(StripeEvent.received_at, retrying),
            _first(StripeEvent.next_attempt_at, retrying, StripeEvent.next_attempt_at.is_not(None)),
            _count(queued),
            _count(retrying),
            _count(*overdue),
            _count(status == EventStatus.FAILED.value),
        )
    ).one()
    oldest_queued, oldest_retrying, first_due, n_queued, n_retrying, n_overdue, n_failed = row
    oldest = min((t for t in (oldest_queued, oldest_retrying) if t is not None), default=None)
    return Backlog(
        queued=n_queued,
        retrying=n_retrying,
        overdue=n_overdue,
        failed=n_failed,
        age_seconds=_since(oldest, now),
        retry_overdue_seconds=_since(first_due, now),
    )


def _since(moment: datetime | None, now: datetime) -> float:
    return max((now - moment).total_seconds(), 0.0) if moment is not None else 0.0


def received_since(session: Session, since: datetime, *, deliveries: bool = False) -> int:
    """Events recorded since `since`, counted up to `COUNT_CAP` (a range of ix_stripe_events_received).

    :param deliveries: leave out the objects backfill and reconcile fetched (logged as events of
        their own, processing/snapshots.py): only what reached the log from outside counts.
    """
    conditions = [StripeEvent.received_at >= since]
    if deliveries:
        conditions += [~StripeEvent.id.like(f"{source}\\_%", escape="\\") for source in snapshots.SOURCES]
    return int(session.scalar(sa.select(_count(*conditions))) or 0)

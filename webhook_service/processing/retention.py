"""Retention: processed and ignored events older than EVENT_RETENTION_DAYS leave the event log.

What the mirror still needs, and is therefore never removed:
- every event that is queued, retrying or failed (its work is not done);
- the id of every event a mirrored row names: `invoice_status_history.event_id` (the portal reads
  it), and `invoices.source_event_id` / `credit_notes.source_event_id` (which snapshot a row
  holds). Those rows stay in the log with their metadata; only the payload, the bulk of the bytes,
  is dropped (`payload_pruned_at` says when);
- 30 days of everything: Stripe redelivers for up to 3 days and its Events API lists 30 days, and
  the log is how a redelivery or a `resync` is recognised as already handled. Handlers are
  idempotent merges, so a pruned event arriving again changes nothing, but it would be recorded
  and processed a second time.

Work goes in batches of BATCH_SIZE events, each its own short transaction, walking the
(status, received_at) index in order, so pruning never holds locks for long and a run that is
stopped part way simply continues from the oldest remaining event next time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from webhook_service.core.config import MIN_RETENTION_DAYS
from webhook_service.core.models import (
    CreditNote,
    EventStatus,
    Invoice,
    InvoiceStatusChange,
    StripeEvent,
    utcnow,
)
from webhook_service.processing import audit
from webhook_service.processing.db import Database

logger = logging.getLogger(__name__)

#: Statuses whose events may go: their work is done.
PRUNABLE = (EventStatus.PROCESSED.value, EventStatus.IGNORED.value)
BATCH_SIZE = 5000


@dataclass
class PruneReport:
    """What a prune removed (or, on a dry run, would remove)."""

    cutoff: datetime
    deleted: int = 0
    kept_ids: int = 0
    batches: int = 0
    dry_run: bool = False

    def as_dict(self) -> dict:
        return {
            "cutoff": self.cutoff.isoformat(),
            "deleted": self.deleted,
            "kept_ids": self.kept_ids,
            "batches": self.batches,
            "dry_run": self.dry_run,
        }


def prune_events(
    db: Database,
    *,
    older_than_days: int,
    actor: str,
    dry_run: bool = False,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[PruneReport], None] | None = None,
) -> PruneReport:
    """Remove processed and ignored events received more than `older_than_days` days ago.

    :raises ValueError: `older_than_days` is below MIN_RETENTION_DAYS.
    """
    if older_than_days < MIN_RETENTION_DAYS:
        raise ValueError(
            f"events are kept at least {MIN_RETENTION_DAYS} days (Stripe's Events API window, "
            f"so redeliveries and resync are recognised); got {older_than_days}"
        )
    report = PruneReport(cutoff=(now or utcnow()) - timedelta(days=older_than_days), dry_run=dry_run)
    for status in PRUNABLE:
        after: tuple[datetime, str] | None = None
        while True:
            with db.sessions() as session, session.begin():
                batch = _next_batch(session, status, report.cutoff, after, batch_size)
                if not batch:
                    break
                after = (batch[-1][1], batch[-1][0])
                ids = [event_id for event_id, _, _ in batch]
                referenced = _referenced(session, batch)
                report.kept_ids += len(referenced)
                report.deleted += len(ids) - len(referenced)
                report.batches += 1
                if not dry_run:
                    _apply(session, status, ids, referenced)
            if progress is not None:
                progress(report)
            if len(batch) < batch_size:
                break
    logger.info("prune%s: %s", " (dry run)" if dry_run else "", report.as_dict())
    audit.record_action(
        db,
        actor=actor,
        action="prune",
        parameters={"older_than_days": older_than_days, "dry_run": dry_run},
        result=report.as_dict(),
    )
    return report


def _next_batch(session, status: str, cutoff: datetime, after, limit: int) -> list[tuple[str, datetime, str]]:
    """(id, received_at, object_id) of the next prunable events of one status, oldest first."""
    stmt = sa.select(StripeEvent.id, StripeEvent.received_at, StripeEvent.object_id).where(
        StripeEvent.status == status,
        StripeEvent.received_at < cutoff,
        StripeEvent.payload_pruned_at.is_(None),
    )
    if after is not None:
        stmt = stmt.where(sa.tuple_(StripeEvent.received_at, StripeEvent.id) > sa.tuple_(*after))
    stmt = stmt.order_by(StripeEvent.received_at, StripeEvent.id).limit(limit)
    return [tuple(row) for row in session.execute(stmt)]


def _referenced(session, batch) -> set[str]:
    """The ids of the batch that a mirrored row names (they keep their row, without payload)."""
    ids = [event_id for event_id, _, _ in batch]
    objects = sorted({object_id for _, _, object_id in batch if object_id})
    found = set(
        session.scalars(sa.select(InvoiceStatusChange.event_id).where(InvoiceStatusChange.event_id.in_(ids)))
    )
    if objects:
        for model in (Invoice, CreditNote):
            found.update(
                session.scalars(
                    sa.select(model.source_event_id).where(
                        model.id.in_(objects), model.source_event_id.in_(ids)
                    )
                )
            )
    return found & set(ids)


def _apply(session, status: str, ids: list[str], referenced: set[str]) -> None:
    # Guarded on status: an event a `replay --force` queued meanwhile is left alone.
    guard = (StripeEvent.status == status, StripeEvent.payload_pruned_at.is_(None))
    if referenced:
        session.execute(
            sa.update(StripeEvent)
            .where(StripeEvent.id.in_(sorted(referenced)), *guard)
            .values(payload="", payload_pruned_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    gone = [event_id for event_id in ids if event_id not in referenced]
    if gone:
        session.execute(
            sa.delete(StripeEvent)
            .where(StripeEvent.id.in_(gone), *guard)
            .execution_options(synchronize_session=False)
        )

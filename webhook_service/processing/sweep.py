"""The daily past-due sweep: open invoices whose due date passed with no event saying so."""

from __future__ import annotations

import logging
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from handlers import past_due, status_history
from webhook_service.core.models import Invoice, InvoiceStatus, utcnow
from webhook_service.processing.db import Database

logger = logging.getLogger(__name__)

#: Invoices per transaction: bounded lock time and memory, few round trips.
SWEEP_BATCH_SIZE = 1000


def sweep_past_due(db: Database, now: datetime | None = None, batch_size: int = SWEEP_BATCH_SIZE) -> int:
    """Move open invoices due before `now` to past due, in batches; return how many moved.

    Uses the (status, due_date) index, so its cost follows the invoices that are due, not the
    table's size. Rows a drain holds are skipped and caught by the next run.
    """
    cutoff = now or utcnow()
    moved = 0
    while True:
        with db.sessions() as session, session.begin():
            invoices = session.scalars(
                sa.select(Invoice)
                .where(
                    Invoice.status == InvoiceStatus.OPEN.value,
                    Invoice.due_date < cutoff,
                    Invoice.deleted_at.is_(None),
                )
                .order_by(Invoice.id)
                .limit(batch_size)
                .options(selectinload(Invoice.status_history))
                .with_for_update(skip_locked=True, of=Invoice)
            ).all()
            if not invoices:
                break
            past_due.load_preferences(session, (inv.customer_id for inv in invoices))
            for invoice in invoices:
                past_due.observe(
                    session,
                    invoice,
                    at=invoice.due_date,  # type: ignore[arg-type]  # the query selects due dates
                    event_id=None,
                    amount_remaining=invoice.amount_remaining,
                    currency=invoice.currency,
                    due_date=invoice.due_date,
                )
                status_history.relink(invoice)
                invoice.status = status_history.portal_status(invoice)
            moved += len(invoices)
    logger.info("past-due sweep moved %d invoices", moved, extra={"fields": {"sweep_moved": moved}})
    return moved

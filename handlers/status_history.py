"""The invoice status trail as an order-free merge of observations.

Each status an invoice entered has one row. Observations of the same status compete by key
(smallest wins: the causing event, then the earliest); rows are linked from → to in status
order, so any delivery order builds the same trail.
"""

from __future__ import annotations

from datetime import datetime

from webhook_service.core.models import Invoice, InvoiceStatus, InvoiceStatusChange

#: Statuses only move up this order (paid and void are both final).
STATUS_RANK = {
    InvoiceStatus.DRAFT.value: 0,
    InvoiceStatus.OPEN.value: 1,
    InvoiceStatus.PAST_DUE.value: 2,
    InvoiceStatus.UNCOLLECTIBLE.value: 3,
    InvoiceStatus.PAID.value: 4,
    InvoiceStatus.VOID.value: 4,
}
#: Statuses that end a past-due episode.
EXIT_STATUSES = (InvoiceStatus.UNCOLLECTIBLE.value, InvoiceStatus.PAID.value, InvoiceStatus.VOID.value)


def find(invoice: Invoice, status: str) -> InvoiceStatusChange | None:
    """The trail's row for a status, if the invoice entered it."""
    return next((row for row in invoice.status_history if row.to_status == status), None)


def merge(invoice: Invoice, status: str, at: datetime, event_id: str | None, key: str) -> str:
    """Merge one observation; return "new", "earlier" (it replaced the row's) or "unchanged"."""
    existing = find(invoice, status)
    if existing is None:
        invoice.status_history.append(
            InvoiceStatusChange(
                to_status=status, rank=STATUS_RANK[status], at=at, event_id=event_id, observation_key=key
            )
        )
        return "new"
    if key < existing.observation_key:
        existing.at, existing.event_id, existing.observation_key = at, event_id, key
        return "earlier"
    return "unchanged"


def remove(invoice: Invoice, status: str) -> bool:
    """Drop a status from the trail (an observation proved wrong); return whether it was there."""
    row = find(invoice, status)
    if row is None:
        return False
    invoice.status_history.remove(row)
    return True


def relink(invoice: Invoice) -> None:
    """Set each row's from_status to the status before it, in status order."""
    previous = None
    for row in sorted(invoice.status_history, key=lambda r: r.rank):
        if row.from_status != previous:
            row.from_status = previous
        previous = row.to_status


def portal_status(invoice: Invoice) -> str:
    """The highest status entered (statuses never move backwards)."""
    return max((row.to_status for row in invoice.status_history), key=STATUS_RANK.__getitem__)


def exit_time(invoice: Invoice) -> datetime | None:
    """When the invoice left open/past-due for good (paid, void or uncollectible), if it did."""
    times = [row.at for row in invoice.status_history if row.to_status in EXIT_STATUSES]
    return min(times) if times else None

"""Stripe event → database changes, as plain functions of (event, session).

No Flask, no network, no commit: the caller owns the transaction. Dispatch is this one explicit
table; event types not in it are acknowledged and recorded as ignored by the receiver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from handlers import invoices
from webhook_service.models import Customer, Invoice

Handler = Callable[[dict, Session], None]

EVENT_HANDLERS: dict[str, Handler] = {
    **{event_type: invoices.handle_invoice_event for event_type in invoices.EVENT_TYPES},
}
HANDLED_TYPES = frozenset(EVENT_HANDLERS)

_RELATED_IDS = {event_type: invoices.related_ids for event_type in invoices.EVENT_TYPES}


def handle(event: dict, session: Session) -> None:
    """Apply one event. Unknown types are a no-op (the receiver already recorded them as ignored)."""
    handler = EVENT_HANDLERS.get(event.get("type"))
    if handler is not None:
        handler(event, session)


def lock_related_rows(session: Session, events: Sequence[dict]) -> None:
    """Load and lock, in one query per table and in id order, every row a batch of events touches.

    Handlers then find those rows in the session's identity map. Locking in a fixed order keeps
    concurrent drains from deadlocking; on SQLite the transaction already holds the write lock.
    """
    invoice_ids: set[str] = set()
    customer_ids: set[str] = set()
    for event in events:
        related = _RELATED_IDS.get(event.get("type"))
        if related is not None:
            inv, cus = related(event)
            invoice_ids |= inv
            customer_ids |= cus
    if customer_ids:
        session.scalars(
            sa.select(Customer)
            .where(Customer.id.in_(sorted(customer_ids)))
            .order_by(Customer.id)
            .with_for_update()
        ).all()
    if invoice_ids:
        session.scalars(
            sa.select(Invoice)
            .where(Invoice.id.in_(sorted(invoice_ids)))
            .order_by(Invoice.id)
            .options(selectinload(Invoice.lines), selectinload(Invoice.status_history))
            .with_for_update(of=Invoice)
        ).all()

"""Stripe event → database changes, as plain functions of (event, session).

No Flask, no network, no commit: the caller owns the transaction. Dispatch is this one explicit
table; event types not in it are acknowledged and recorded as ignored by the receiver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from handlers import credit_notes, customers, invoices, past_due
from webhook_service.db import dialect_insert
from webhook_service.models import CreditNote, Customer, Invoice, utcnow

Handler = Callable[[dict, Session], None]

EVENT_HANDLERS: dict[str, Handler] = {
    **{event_type: invoices.handle_invoice_event for event_type in invoices.EVENT_TYPES},
    **{event_type: customers.handle_customer_event for event_type in customers.EVENT_TYPES},
    **{event_type: credit_notes.handle_credit_note_event for event_type in credit_notes.EVENT_TYPES},
}
HANDLED_TYPES = frozenset(EVENT_HANDLERS)

_RELATED_IDS = {
    **{event_type: invoices.related_ids for event_type in invoices.EVENT_TYPES},
    **{event_type: customers.related_ids for event_type in customers.EVENT_TYPES},
    **{event_type: credit_notes.related_ids for event_type in credit_notes.EVENT_TYPES},
}


def _related_ids(event: dict) -> dict[str, set[str]]:
    related = _RELATED_IDS.get(event.get("type"))
    return {} if related is None else related(event)


def related_keys(event: dict) -> set[str]:
    """`table:id` for every row the event's handler may write (what `lock_related_rows` locks)."""
    return {f"{table}:{row_id}" for table, ids in _related_ids(event).items() for row_id in ids}


def handle(event: dict, session: Session) -> None:
    """Apply one event. Unknown types are a no-op (the receiver already recorded them as ignored)."""
    handler = EVENT_HANDLERS.get(event.get("type"))
    if handler is not None:
        handler(event, session)


def lock_related_rows(session: Session, events: Sequence[dict]) -> None:
    """Create missing rows, then load and lock every row a batch touches: one query per table, id order.

    Handlers then find every row in the session's identity map, so a batch of 500 events costs a
    few statements instead of a SELECT and an autoflush per event. Missing rows are inserted as
    empty stubs (`version_key = ""`, which any snapshot outranks) with ON CONFLICT DO NOTHING, so
    two drains creating the same invoice wait on each other instead of failing. Sorting the ids
    keeps concurrent drains from deadlocking; on SQLite the transaction holds the write lock.
    """
    wanted: dict[str, set[str]] = {"invoices": set(), "customers": set(), "credit_notes": set()}
    notifying = any(event.get("type") in past_due.EVENT_TYPES for event in events)
    for event in events:
        for table, ids in _related_ids(event).items():
            wanted[table] |= ids
    invoice_ids, customer_ids, note_ids = wanted["invoices"], wanted["customers"], wanted["credit_notes"]
    now = utcnow()
    dialect = session.get_bind().dialect.name
    # The identity map holds unchanged rows weakly; keep them alive until the session closes.
    held: list = session.info.setdefault("locked_rows", [])
    if customer_ids:
        stubs = [{"id": i, "version_key": "", "livemode": False, "credit_balance": 0,
                  "entity_type": "organization", "created_at": now, "updated_at": now}
                 for i in sorted(customer_ids)]  # fmt: skip
        session.execute(dialect_insert(dialect, Customer).on_conflict_do_nothing(), stubs)  # executemany
        held += session.scalars(
            sa.select(Customer)
            .where(Customer.id.in_(sorted(customer_ids)))
            .order_by(Customer.id)
            .options(selectinload(Customer.ledger))
            .with_for_update(of=Customer)
        ).all()
    if notifying:
        past_due.load_preferences(session, customer_ids)
    if invoice_ids:
        stubs = [
            {"id": i, "version_key": "", "status": "draft", "credit_applied": 0, "attempt_count": 0,
             "livemode": False, "lines_truncated": False, "pre_payment_credit_notes_amount": 0,
             "post_payment_credit_notes_amount": 0, "amount_overpaid": 0, "credited_in_full": False,
             "updated_at": now}
            for i in sorted(invoice_ids)
        ]  # fmt: skip
        session.execute(dialect_insert(dialect, Invoice).on_conflict_do_nothing(), stubs)  # executemany
        held += session.scalars(
            sa.select(Invoice)
            .where(Invoice.id.in_(sorted(invoice_ids)))
            .order_by(Invoice.id)
            .options(selectinload(Invoice.lines), selectinload(Invoice.status_history))
            .with_for_update(of=Invoice)
        ).all()
    if note_ids:
        held += session.scalars(
            sa.select(CreditNote)
            .where(CreditNote.id.in_(sorted(note_ids)))
            .order_by(CreditNote.id)
            .with_for_update()
        ).all()

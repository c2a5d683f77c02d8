"""Stripe event → database changes, as plain functions of (event, session).

No Flask, no network, no commit: the caller owns the transaction. Dispatch is this one explicit
table; event types not in it are acknowledged and recorded as ignored by the receiver.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from handlers import credit_notes, customers, invoice_payments, invoices, ordering, readings

Handler = Callable[[dict, Session], None]

EVENT_HANDLERS: dict[str, Handler] = {
    **{event_type: invoices.handle_invoice_event for event_type in invoices.EVENT_TYPES},
    **{event_type: customers.handle_customer_event for event_type in customers.EVENT_TYPES},
    **{event_type: credit_notes.handle_credit_note_event for event_type in credit_notes.EVENT_TYPES},
    **{
        event_type: invoice_payments.handle_invoice_payment_event
        for event_type in invoice_payments.EVENT_TYPES
    },
}
HANDLED_TYPES = frozenset(EVENT_HANDLERS)

#: Which declared reading (handlers/readings) each handled type's `data.object` must pass.
EVENT_FAMILIES: dict[str, str] = {
    **{event_type: "invoice" for event_type in invoices.EVENT_TYPES},
    **{event_type: "customer" for event_type in customers.EVENT_TYPES},
    **{event_type: "credit_note" for event_type in credit_notes.EVENT_TYPES},
    **{event_type: "invoice_payment" for event_type in invoice_payments.EVENT_TYPES},
}

_RELATED_IDS = {
    **{event_type: invoices.related_ids for event_type in invoices.EVENT_TYPES},
    **{event_type: customers.related_ids for event_type in customers.EVENT_TYPES},
    **{event_type: credit_notes.related_ids for event_type in credit_notes.EVENT_TYPES},
    **{event_type: invoice_payments.related_ids for event_type in invoice_payments.EVENT_TYPES},
}


class ReadEvent(dict):
    """An event its family's declared reading accepted: only declared fields, each checked."""


def read(event) -> dict:
    """The event as handlers see it; unhandled types come back unchanged.

    Pure (no database), so a drain can refuse bad events before its batch transaction touches
    any row, and a single-event attempt before it locks any.

    :raises PermanentEventError: a field is missing, of the wrong type or out of range; the
        message starts with the field's path (`data.object.lines.data[3].amount: ...`).
    """
    if isinstance(event, ReadEvent):
        return event
    family = EVENT_FAMILIES.get(event.get("type") or "") if isinstance(event, dict) else None
    if family is None:
        return event
    return ReadEvent(readings.read_event(event, family))


def related_ids(event: dict) -> dict[str, set[str]]:
    """Table name to the ids of the rows the event's handler may write."""
    related = _RELATED_IDS.get(event.get("type") or "")
    return {} if related is None else related(read(event))


def related_keys(event: dict) -> set[str]:
    """`table:id` for every row the event's handler may write (what `lock_related_rows` locks)."""
    return {f"{table}:{row_id}" for table, ids in related_ids(event).items() for row_id in ids}


#: Families whose handlers settle same-second ties from the event log (handlers.ordering).
_TIED_FAMILIES = frozenset({"invoice", "customer"})


def expect_batch(events: list[dict], session: Session) -> None:
    """Tell the handlers which logged events a batch is about to apply (each as `read` returned
    it), so same-second ties read the log once per batch and never re-read the batch's own."""
    by_family: dict[str, list[dict]] = {}
    for event in events:
        family = EVENT_FAMILIES.get(event.get("type") or "")
        if family in _TIED_FAMILIES and isinstance(event, ReadEvent):
            by_family.setdefault(family, []).append(event)
    for family, members in by_family.items():
        ordering.expect_ties(session, family, members)


def handle(event: dict, session: Session) -> None:
    """Apply one event. Unknown types are a no-op (the receiver already recorded them as ignored)."""
    handler = EVENT_HANDLERS.get(event.get("type") or "")
    if handler is not None:
        handler(read(event), session)

"""invoice_payment.* events (2025-05-28.basil and later) → payments toward an invoice.

An invoice can be paid in parts; each part is an InvoicePayment. Its row merges like the other
mirrors (newest status wins: open < paid | canceled, then the later event), and the invoice's
`amount_paid` is never less than what its paid payments add up to: the invoice snapshot and the
payments are both observations of one amount that only grows, so the result is a max and does
not depend on which arrived first. `amount_remaining` follows when the payments say more.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from handlers.scopes import Scope, claim, event_scope
from webhook_service.core.models import Invoice, InvoicePayment
from webhook_service.core.values import int_or_zero, timestamp

EVENT_TYPES = frozenset({"invoice_payment.paid"})
STATUS_RANK = {"open": 0, "paid": 1, "canceled": 1}


def related_ids(event: dict) -> dict[str, set[str]]:
    """The rows this event touches, for batch locking."""
    return {"invoices": {event["data"]["object"]["invoice"]}}


def handle_invoice_payment_event(event: dict, session: Session) -> None:
    """Merge the payment, then let the invoice's amounts reflect every paid part."""
    obj = event["data"]["object"]
    version = f"{int_or_zero(event.get('created')):011d}.{event['id']}"
    merge_payment(session, obj, version, event["id"], event_scope(event))
    invoice = session.get(Invoice, obj["invoice"])
    if invoice is not None:
        settle(session, invoice)


def merge_payment(
    session: Session, obj: dict, version: str, source_event_id: str | None, scope: Scope
) -> None:
    """Upsert one InvoicePayment (from its own event, or from an invoice's `payments.data`) in the
    event's mode and account: the envelope says them, a payment inside an invoice does not.

    :raises PermanentEventError: the payment is already mirrored for another mode or account.
    """
    payment = session.get(InvoicePayment, obj["id"])
    if payment is None:
        payment = InvoicePayment(id=obj["id"], version_key="")
        session.add(payment)
    claim(payment, "invoice payment", scope, established=bool(payment.version_key))
    key = f"{STATUS_RANK.get(obj.get('status') or 'open', 0)}.{version}"
    if key <= payment.version_key:
        return
    payment.invoice_id = obj.get("invoice") or payment.invoice_id
    payment.status = obj.get("status")
    payment.amount_paid = obj.get("amount_paid")
    payment.amount_requested = obj.get("amount_requested")
    payment.currency = obj.get("currency")
    payment.paid_at = timestamp((obj.get("status_transitions") or {}).get("paid_at"))
    payment.version_key = key
    payment.source_event_id = source_event_id


def settle(session: Session, invoice: Invoice) -> None:
    """Recount the invoice's paid payments, then apply them to its amounts."""
    session.flush()
    invoice.payments_amount_paid = (
        session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(InvoicePayment.amount_paid), 0)).where(
                InvoicePayment.invoice_id == invoice.id, InvoicePayment.status == "paid"
            )
        )
        or 0
    )
    apply_to_amounts(invoice)


def apply_to_amounts(invoice: Invoice) -> None:
    """`amount_paid` is at least the paid payments' sum (no query: the sum is on the row)."""
    paid = invoice.payments_amount_paid or 0
    if paid > (invoice.amount_paid or 0):
        invoice.amount_paid = paid
        if invoice.amount_due is not None:
            invoice.amount_remaining = max(0, invoice.amount_due - paid)

"""The declared reading of an InvoicePayment (`invoice_payment.paid`, 2025-05-28.basil and later)."""

from __future__ import annotations

from handlers.readings.fields import (
    Bool,
    Choice,
    Currency,
    Expandable,
    Id,
    Int,
    Obj,
    Reading,
    Text,
    Timestamp,
)
from webhook_service.core.models import Invoice

STATUSES = ("open", "paid", "canceled")


class Transitions(Reading):
    paid_at = Timestamp()
    canceled_at = Timestamp()


class Payment(Reading):
    """What the mirror reads of an InvoicePayment, in an event of its own or in an invoice's
    `payments.data` (where `invoice` and `status` may be left out)."""

    id = Id(required=True, allow_none=False)
    amount_paid = Int()
    amount_requested = Int()
    currency = Currency()
    status = Choice(STATUSES)
    status_transitions = Obj(Transitions)


class InvoicePaymentReading(Payment):
    object = Text(max_length=64)
    invoice = Expandable(Invoice.id, required=True, allow_none=False)
    status = Choice(STATUSES, required=True, allow_none=False)
    # Required by every release's schema: a payment without them fails naming the field instead
    # of being stored with a NULL currency or amount.
    currency = Currency(required=True, allow_none=False)
    amount_requested = Int(required=True, allow_none=False)
    is_default = Bool()
    created = Timestamp()
    livemode = Bool()

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


class Transitions(Reading):
    paid_at = Timestamp()
    canceled_at = Timestamp()


class InvoicePaymentReading(Reading):
    id = Id(required=True, allow_none=False)
    object = Text(max_length=64)
    invoice = Expandable(Invoice.id, required=True, allow_none=False)
    amount_paid = Int()
    amount_requested = Int()
    currency = Currency()
    status = Choice(("open", "paid", "canceled"), required=True, allow_none=False)
    status_transitions = Obj(Transitions)
    is_default = Bool()
    created = Timestamp()
    livemode = Bool()

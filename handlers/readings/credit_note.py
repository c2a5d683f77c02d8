"""The declared reading of a credit note (one `refund` before basil, `refunds[]` from it on)."""

from __future__ import annotations

from handlers.readings.fields import (
    Bool,
    Choice,
    Currency,
    Expandable,
    Id,
    Int,
    Obj,
    Page,
    Reading,
    Text,
    Timestamp,
    items,
)
from webhook_service.core.models import CreditNote, Customer

STATUSES = ("issued", "void")
TYPES = ("pre_payment", "post_payment", "mixed")


class Refund(Reading):
    amount_refunded = Int(required=True, allow_none=False)
    refund = Expandable()


class Line(Reading):
    id = Id(required=True, allow_none=False)
    amount = Int()
    description = Text()


class Lines(Page):
    """Not mirrored, but read (and completed by the worker when `has_more`)."""

    data = items(Line)


class CreditNoteReading(Reading):
    id = Id(CreditNote.id, required=True, allow_none=False)
    object = Text(max_length=64)
    number = Text(CreditNote.number)
    customer = Expandable(Customer.id)
    invoice = Expandable(CreditNote.invoice_id)
    type = Choice(TYPES)
    status = Choice(STATUSES, required=True, allow_none=False)
    currency = Currency()
    amount = Int(required=True, allow_none=False)
    subtotal = Int()
    total = Int()
    out_of_band_amount = Int()
    pre_payment_amount = Int()
    post_payment_amount = Int()
    refunds = items(Refund)
    refund = Expandable()
    customer_balance_transaction = Expandable(CreditNote.customer_balance_transaction)
    reason = Text(CreditNote.reason)
    memo = Text(CreditNote.memo)
    pdf = Text(CreditNote.pdf)
    created = Timestamp()
    voided_at = Timestamp()
    livemode = Bool()
    lines = Obj(Lines, allow_none=False)

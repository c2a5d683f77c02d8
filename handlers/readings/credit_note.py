"""The declared reading of a credit note (one `refund` before basil, `refunds[]` from it on)."""

from __future__ import annotations

from collections.abc import Mapping

from marshmallow import ValidationError

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


class AmountRef(Expandable):
    """An id, or an expanded object read as `{"id", "amount"}`.

    Before basil a credit note that both refunds and credits the balance does not say how it split;
    an expanded `refund` or `customer_balance_transaction` (in the payload, or fetched by the
    worker) does, through its `amount`.
    """

    def _deserialize(self, value, attr, data, **kwargs):
        ident = super()._deserialize(value, attr, data, **kwargs)
        if not isinstance(value, Mapping) or value.get("amount") is None:
            return ident
        try:
            amount = Int()._deserialize(value["amount"], "amount", value)
        except ValidationError as exc:
            raise ValidationError({"amount": exc.messages}) from None
        return {"id": ident, "amount": amount}


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
    # Every version's schema requires these three and none makes them nullable: a note without
    # one cannot be mirrored (whose credit, of which invoice, in what money) and fails, naming it.
    customer = Expandable(Customer.id, required=True, allow_none=False)
    invoice = Expandable(CreditNote.invoice_id, required=True, allow_none=False)
    type = Choice(TYPES)
    status = Choice(STATUSES, required=True, allow_none=False)
    currency = Currency(required=True, allow_none=False)
    amount = Int(required=True, allow_none=False)
    subtotal = Int()
    total = Int()
    out_of_band_amount = Int()
    pre_payment_amount = Int()
    post_payment_amount = Int()
    refunds = items(Refund)
    refund = AmountRef()
    customer_balance_transaction = AmountRef(CreditNote.customer_balance_transaction)
    reason = Text(CreditNote.reason)
    memo = Text(CreditNote.memo)
    pdf = Text(CreditNote.pdf)
    created = Timestamp()
    voided_at = Timestamp()
    livemode = Bool()
    lines = Obj(Lines, allow_none=False)

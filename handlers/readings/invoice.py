"""The declared reading of an invoice, in every API version's shape (docs/design.md, "API eras").

Every field the invoice handler uses is declared here, with the names of all eras side by side
(`date` and `created`, `billing` and `collection_method`, `tax` and `total_taxes`,
`subscription` and `parent`, line `price`/`plan` and `pricing`). What is not declared is not
read, so a value the handler would trip over cannot get past this schema.
"""

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
    StringMap,
    Text,
    Timestamp,
    items,
)
from handlers.readings.invoice_payment import Payment
from webhook_service.core.models import Customer, Invoice, InvoiceLine

#: `deleted` is in the status enum of Stripe's published spec (2019-03-14 and later): a deleted
#: draft, which handlers.invoice_eras reads as a draft that is gone.
STATUSES = ("draft", "open", "paid", "uncollectible", "void", "deleted")
COLLECTION_METHODS = ("charge_automatically", "send_invoice")
USAGE_TYPES = ("licensed", "metered")


class Period(Reading):
    start = Timestamp()
    end = Timestamp()


class Recurring(Reading):
    usage_type = Choice(USAGE_TYPES)


class Price(Reading):
    id = Id(InvoiceLine.price_id, required=True, allow_none=False)
    recurring = Obj(Recurring)
    metadata = StringMap()


_PRICE = Price()


class Plan(Reading):
    id = Id(InvoiceLine.price_id)
    usage_type = Choice(USAGE_TYPES)
    metadata = StringMap()


class PriceRef(Expandable):
    """A price id, or (2025-12-15.clover and later, when expanded) the Price, read as a Price."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, dict):
            return _PRICE.load(value)
        return super()._deserialize(value, attr, data, **kwargs)


class PriceDetails(Reading):
    price = PriceRef(InvoiceLine.price_id)
    product = Expandable()


class Pricing(Reading):
    type = Text(max_length=64)
    price_details = Obj(PriceDetails)


class LineItemParent(Reading):
    """`parent.subscription_item_details` / `parent.invoice_item_details` (basil and later)."""

    proration = Bool()
    subscription = Expandable()
    subscription_item = Expandable()
    invoice_item = Expandable()


class LineParent(Reading):
    type = Text(max_length=64)
    subscription_item_details = Obj(LineItemParent)
    invoice_item_details = Obj(LineItemParent)


class Line(Reading):
    id = Id(InvoiceLine.id, required=True, allow_none=False)
    #: Globally unique line id that versions before 2019-12-03 carry beside a legacy `id`.
    unique_id = Id(InvoiceLine.id)
    type = Text(max_length=32)
    amount = Int(required=True, allow_none=False)
    currency = Currency()
    description = Text(InvoiceLine.description)
    quantity = Int(count=True)  # metered usage: bytes, tokens
    period = Obj(Period)
    proration = Bool()
    price = Obj(Price)
    plan = Obj(Plan)
    pricing = Obj(Pricing)
    parent = Obj(LineParent)
    subscription = Expandable()
    subscription_item = Expandable()
    invoice_item = Expandable()
    metadata = StringMap()


class Lines(Page):
    data = items(Line)
    total_count = Int(count=True)


class TaxAmount(Reading):
    amount = Int(required=True, allow_none=False)


class StatusTransitions(Reading):
    finalized_at = Timestamp()
    paid_at = Timestamp()
    voided_at = Timestamp()
    marked_uncollectible_at = Timestamp()


class SubscriptionDetails(Reading):
    subscription = Expandable(Invoice.subscription_id)


class InvoiceParent(Reading):
    type = Text(max_length=64)
    subscription_details = Obj(SubscriptionDetails)


class Payments(Page):
    """`payments` (basil and later): the invoice's InvoicePayments."""

    data = items(Payment)


class InvoiceReading(Reading):
    id = Id(Invoice.id, required=True, allow_none=False)
    object = Text(max_length=64)
    number = Text(Invoice.number)
    customer = Expandable(Customer.id)
    customer_name = Text(Customer.name)
    customer_email = Text(Customer.email)
    status = Choice(STATUSES)
    # Before 2018-02-28 there is no status; these booleans say it (`forgiven` until 2018-11-08).
    paid = Bool()
    closed = Bool()
    forgiven = Bool()
    attempted = Bool()
    # Required by every version's schema (a deletion stub has its own reading): an invoice
    # without its currency or amounts fails naming the field instead of mirroring NULL.
    currency = Currency(required=True, allow_none=False)
    subtotal = Int(required=True, allow_none=False)
    tax = Int()
    total_taxes = items(TaxAmount, nullable=True)
    total_tax_amounts = items(TaxAmount, nullable=True)
    total = Int(required=True, allow_none=False)
    total_excluding_tax = Int()
    amount_due = Int(required=True, allow_none=False)
    amount_paid = Int(allow_none=False)
    amount_remaining = Int(allow_none=False)
    amount_overpaid = Int()
    starting_balance = Int()
    ending_balance = Int()
    pre_payment_credit_notes_amount = Int()
    post_payment_credit_notes_amount = Int()
    attempt_count = Int(Invoice.attempt_count)
    collection_method = Choice(COLLECTION_METHODS)
    billing = Choice(COLLECTION_METHODS)
    billing_reason = Text(Invoice.billing_reason)
    subscription = Expandable(Invoice.subscription_id)
    parent = Obj(InvoiceParent)
    created = Timestamp()
    date = Timestamp()
    finalized_at = Timestamp()
    effective_at = Timestamp()
    due_date = Timestamp()
    period_start = Timestamp()
    period_end = Timestamp()
    status_transitions = Obj(StatusTransitions, allow_none=False)
    hosted_invoice_url = Text(Invoice.hosted_invoice_url)
    invoice_pdf = Text(Invoice.invoice_pdf)
    livemode = Bool()
    #: `true` on Stripe's answer to deleting a draft (`{id, object, deleted}`), when an event carries it.
    deleted = Bool()
    lines = Obj(Lines, required=True, allow_none=False)
    payments = Obj(Payments)
    metadata = StringMap()

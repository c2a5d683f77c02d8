"""Marshmallow schemas of the read API: one per resource, dump-only, plus the query arguments.

They generate the OpenAPI document (flask-smorest/apispec), so the document cannot drift from
what the endpoints return. Amounts are integers in minor units beside a `currency`; times are
ISO 8601 in UTC.
"""

from __future__ import annotations

from datetime import UTC

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from webhook_service.core.errors import error_summary
from webhook_service.core.models import Audience, EventStatus, InvoiceStatus

#: What `account` means on every mirrored object.
ACCOUNT_DESCRIPTION = (
    "The Connect account the object belongs to (`event.account`); null for the platform's own"
)
#: The `account` filter's value for the platform's own objects (account null).
PLATFORM = "platform"
MAX_PER_PAGE = 200
DEFAULT_PER_PAGE = 50
#: Filters are identifiers and prefixes: no NUL or other control characters (PostgreSQL rejects NUL).
PRINTABLE = validate.Regexp(r"^[^\x00-\x1f\x7f]*$", error="must not contain control characters")


class ErrorSummary(fields.String):
    """A stored error shown as its first line: no SQL text and no parameter values reach the API."""

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else error_summary(value)


class _DumpSchema(Schema):
    """Every field is output only."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.dump_only = True


class LineSchema(_DumpSchema):
    id = fields.String()
    description = fields.String(allow_none=True)
    category = fields.String(metadata={"enum": ["usage", "fixed_fee", "adjustment"]})
    amount = fields.Integer()
    currency = fields.String(allow_none=True)
    quantity = fields.Integer(allow_none=True)
    price_id = fields.String(allow_none=True)
    proration = fields.Boolean()
    period_start = fields.DateTime(allow_none=True)
    period_end = fields.DateTime(allow_none=True)
    livemode = fields.Boolean()
    account = fields.String(allow_none=True, metadata={"description": ACCOUNT_DESCRIPTION})


class StatusChangeSchema(_DumpSchema):
    from_status = fields.String(allow_none=True)
    to_status = fields.String()
    at = fields.DateTime()
    event_id = fields.String(allow_none=True, metadata={"description": "Null when the daily sweep found it"})


class CreditNoteSchema(_DumpSchema):
    id = fields.String()
    number = fields.String(allow_none=True)
    invoice_id = fields.String(allow_none=True)
    customer_id = fields.String(allow_none=True)
    type = fields.String(allow_none=True, metadata={"enum": ["pre_payment", "post_payment", "mixed"]})
    status = fields.String(allow_none=True, metadata={"enum": ["issued", "void"]})
    currency = fields.String(allow_none=True)
    amount = fields.Integer(allow_none=True)
    total = fields.Integer(allow_none=True)
    pre_payment_amount = fields.Integer()
    post_payment_amount = fields.Integer()
    out_of_band_amount = fields.Integer()
    refunded_amount = fields.Integer()
    credited_to_balance = fields.Integer()
    reason = fields.String(allow_none=True)
    memo = fields.String(allow_none=True)
    pdf = fields.String(allow_none=True)
    created_at = fields.DateTime(allow_none=True)
    voided_at = fields.DateTime(allow_none=True)
    livemode = fields.Boolean()
    account = fields.String(allow_none=True, metadata={"description": ACCOUNT_DESCRIPTION})


class InvoiceSchema(_DumpSchema):
    id = fields.String()
    number = fields.String(allow_none=True)
    customer_id = fields.String(allow_none=True)
    status = fields.String(metadata={"enum": [s.value for s in InvoiceStatus]})
    currency = fields.String(allow_none=True)
    subtotal = fields.Integer(allow_none=True)
    tax = fields.Integer(allow_none=True)
    total = fields.Integer(allow_none=True)
    amount_due = fields.Integer(allow_none=True)
    amount_paid = fields.Integer(allow_none=True)
    amount_remaining = fields.Integer(allow_none=True)
    credit_applied = fields.Integer()
    pre_payment_credit_notes_amount = fields.Integer()
    post_payment_credit_notes_amount = fields.Integer()
    credited_in_full = fields.Boolean()
    amount_overpaid = fields.Integer()
    created_at = fields.DateTime(allow_none=True)
    issued_at = fields.DateTime(allow_none=True)
    due_date = fields.DateTime(allow_none=True)
    paid_at = fields.DateTime(allow_none=True)
    voided_at = fields.DateTime(allow_none=True)
    period_start = fields.DateTime(allow_none=True)
    period_end = fields.DateTime(allow_none=True)
    hosted_invoice_url = fields.String(allow_none=True)
    invoice_pdf = fields.String(allow_none=True)
    billing_reason = fields.String(allow_none=True)
    collection_method = fields.String(allow_none=True)
    livemode = fields.Boolean()
    account = fields.String(allow_none=True, metadata={"description": ACCOUNT_DESCRIPTION})
    lines_complete = fields.Boolean(
        metadata={"description": "False when `lines` is only the first page Stripe's payload carried"}
    )


class InvoiceDetailSchema(InvoiceSchema):
    lines = fields.List(fields.Nested(LineSchema))
    status_history = fields.List(fields.Nested(StatusChangeSchema))
    credit_notes = fields.List(fields.Nested(CreditNoteSchema))
    deleted_at = fields.DateTime(allow_none=True)


class LedgerEntrySchema(_DumpSchema):
    kind = fields.String()
    amount = fields.Integer(metadata={"description": "Minor units; positive adds credit"})
    currency = fields.String(allow_none=True)
    source_type = fields.String()
    source_id = fields.String()
    effective_at = fields.DateTime(allow_none=True)
    livemode = fields.Boolean()
    account = fields.String(allow_none=True, metadata={"description": ACCOUNT_DESCRIPTION})


class CustomerSchema(_DumpSchema):
    id = fields.String()
    name = fields.String(allow_none=True)
    email = fields.String(allow_none=True)
    entity_type = fields.String(metadata={"enum": ["organization", "company"]})
    entity_id = fields.String(allow_none=True)
    entity_name = fields.Function(lambda c: c.name or c.email or c.id)
    credit_balance = fields.Integer(
        metadata={
            "description": "Credit available in the customer's own `currency`, positive "
            "(Stripe's balance negated)"
        }
    )
    credit_balances = fields.Dict(
        keys=fields.String(),
        values=fields.Integer(),
        metadata={"description": "Credit available per currency (lower-case ISO code → minor units)"},
    )
    currency = fields.String(allow_none=True)
    deleted_at = fields.DateTime(allow_none=True)
    livemode = fields.Boolean()
    account = fields.String(allow_none=True, metadata={"description": ACCOUNT_DESCRIPTION})


class CustomerDetailSchema(CustomerSchema):
    ledger = fields.List(fields.Nested(LedgerEntrySchema))


class NotificationSchema(_DumpSchema):
    id = fields.Integer()
    kind = fields.String(metadata={"enum": ["invoice_past_due"]})
    audience = fields.String(metadata={"enum": [a.value for a in Audience]})
    invoice_id = fields.String()
    customer_id = fields.String(allow_none=True)
    amount_remaining = fields.Integer(allow_none=True)
    currency = fields.String(allow_none=True)
    due_date = fields.DateTime(allow_none=True)
    days_past_due = fields.Integer(allow_none=True)
    channels = fields.String()
    created_at = fields.DateTime()
    delivered_at = fields.DateTime(allow_none=True)
    read_at = fields.DateTime(allow_none=True)
    livemode = fields.Boolean()
    account = fields.String(allow_none=True, metadata={"description": ACCOUNT_DESCRIPTION})


class EventSchema(_DumpSchema):
    id = fields.String()
    type = fields.String()
    status = fields.String(metadata={"enum": [s.value for s in EventStatus]})
    api_version = fields.String(allow_none=True)
    livemode = fields.Boolean()
    account = fields.String(allow_none=True)
    object_id = fields.String(allow_none=True)
    created = fields.DateTime(allow_none=True)
    received_at = fields.DateTime()
    processed_at = fields.DateTime(allow_none=True)
    attempts = fields.Integer()
    last_error = ErrorSummary(
        allow_none=True, metadata={"description": "The last failure's first line (no SQL, no values)"}
    )
    ignored_reason = fields.String(allow_none=True)


class EventDetailSchema(EventSchema):
    next_attempt_at = fields.DateTime(allow_none=True, metadata={"description": "When a retry is due"})


class ErrorSchema(Schema):
    """The body of every error response (web/error_handlers.py renders it)."""

    error = fields.String(
        required=True,
        metadata={"description": "Machine-readable code: bad_request, unauthorized, not_found, …"},
    )
    message = fields.String(required=True, metadata={"description": "What was wrong, for a person"})


def page_schema(item: type[Schema], name: str) -> type[Schema]:
    """The `{"items", "total", "page", "per_page"}` envelope around a resource."""
    return Schema.from_dict(
        {
            "items": fields.List(fields.Nested(item), dump_only=True),
            "total": fields.Integer(dump_only=True),
            "page": fields.Integer(dump_only=True),
            "per_page": fields.Integer(dump_only=True),
        },
        name=name,
    )


InvoicePageSchema = page_schema(InvoiceSchema, "InvoicePage")
NotificationPageSchema = page_schema(NotificationSchema, "NotificationPage")
EventPageSchema = page_schema(EventSchema, "EventPage")
CustomerPageSchema = page_schema(CustomerSchema, "CustomerPage")


# ---- query arguments --------------------------------------------------------------------------
# Unknown parameters are refused (api.py's parser), so every filter a client sends is applied.


class NoArgs(Schema):
    """Detail endpoints take no query parameters."""


class PageArgs(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    per_page = fields.Integer(load_default=DEFAULT_PER_PAGE, validate=validate.Range(min=1, max=MAX_PER_PAGE))


_ID = [validate.Length(min=1, max=255), PRINTABLE]


class ScopeArgs(PageArgs):
    """Every list of mirrored objects filters on mode and Connect account."""

    livemode = fields.Boolean(metadata={"description": "true: live-mode objects only; false: test mode"})
    account = fields.String(
        validate=_ID,
        metadata={"description": f"A Connect account id (`acct_…`), or `{PLATFORM}` for the platform's own"},
    )


class InvoiceArgs(ScopeArgs):
    status = fields.String(validate=validate.OneOf([s.value for s in InvoiceStatus]))
    customer = fields.String(validate=_ID, metadata={"description": "Stripe customer id"})
    entity = fields.String(validate=_ID, metadata={"description": "Portal entity id (customer metadata)"})
    issued_from = fields.AwareDateTime(
        default_timezone=UTC,
        metadata={"description": "ISO 8601, inclusive; must not be after issued_to (400)"},
    )
    issued_to = fields.AwareDateTime(
        default_timezone=UTC,
        metadata={"description": "ISO 8601, exclusive; must not be before issued_from (400)"},
    )
    q = fields.String(
        validate=[validate.Length(min=1, max=255), PRINTABLE],
        metadata={"description": "Invoice number prefix"},
    )

    @validates_schema
    def _check_range(self, data, **kwargs):
        if data.get("issued_from") and data.get("issued_to") and data["issued_from"] > data["issued_to"]:
            raise ValidationError("issued_from must not be after issued_to", "issued_from")


class NotificationArgs(ScopeArgs):
    invoice = fields.String(validate=_ID)
    customer = fields.String(validate=_ID)
    audience = fields.String(validate=validate.OneOf([a.value for a in Audience]))


class CustomerArgs(ScopeArgs):
    entity = fields.String(validate=_ID, metadata={"description": "Portal entity id (customer metadata)"})
    q = fields.String(
        validate=[validate.Length(min=1, max=255), PRINTABLE],
        metadata={"description": "Name or email prefix, ignoring case"},
    )


class EventArgs(ScopeArgs):
    status = fields.String(validate=validate.OneOf([s.value for s in EventStatus]))
    type = fields.String(validate=[validate.Length(min=1, max=100), PRINTABLE])
    since = fields.AwareDateTime(
        default_timezone=UTC, metadata={"description": "Received on or after (ISO 8601)"}
    )


# ---- the audit trail of operator actions ----------------------------------------------------


class OperatorActionSchema(_DumpSchema):
    id = fields.Integer()
    at = fields.DateTime()
    actor = fields.String(
        metadata={"description": "cli:<OS user>, --actor's value, console:<key name>, scheduler"}
    )
    action = fields.String(
        metadata={"description": "replay, resync, pause, resume, prune, or a console action"}
    )
    parameters = fields.Dict(metadata={"description": "What the action was asked to do"})
    result = fields.Dict(allow_none=True, metadata={"description": "What it did (counts); null if none"})


AuditPageSchema = page_schema(OperatorActionSchema, "AuditPage")


class AuditArgs(PageArgs):
    action = fields.String(validate=[validate.Length(min=1, max=64), PRINTABLE])
    actor = fields.String(validate=_ID)
    since = fields.AwareDateTime(default_timezone=UTC, metadata={"description": "At or after (ISO 8601)"})
    until = fields.AwareDateTime(default_timezone=UTC, metadata={"description": "Before (ISO 8601)"})

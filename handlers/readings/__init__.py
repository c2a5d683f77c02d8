"""Declared readings: what a handled event must look like before any handler touches it.

One schema per object family (invoice.py, customer.py, credit_note.py, invoice_payment.py) and
one envelope around it. `read_event` returns the event as the handlers see it (only declared
fields, checked) or raises `PermanentEventError("data.object.lines.data[3].amount: expected an
integer, got \"10000\"")`: a payload that cannot be read never becomes a retry, a 0 or a NULL.
"""

from __future__ import annotations

from marshmallow import Schema, ValidationError

from handlers.readings.credit_note import CreditNoteReading
from handlers.readings.customer import CustomerReading
from handlers.readings.fields import (
    Bool,
    Id,
    Obj,
    Reading,
    Refused,
    StripeField,
    Text,
    Timestamp,
    compile_reading,
    first_error,
    load,
)
from handlers.readings.invoice import InvoiceReading
from handlers.readings.invoice_payment import InvoicePaymentReading
from webhook_service.core.errors import PermanentEventError
from webhook_service.core.values import is_deletion_stub

OBJECT_READINGS: dict[str, type[Schema]] = {
    "invoice": InvoiceReading,
    "customer": CustomerReading,
    "credit_note": CreditNoteReading,
    "invoice_payment": InvoicePaymentReading,
}


class DeletedObjectReading(Reading):
    """Stripe's answer for a deleted object, `{id, object, deleted: true}`: none of the fields
    the object's own reading requires, so it is read by this one (invoices and customers)."""

    id = Id(required=True, allow_none=False)
    object = Text(max_length=64)
    deleted = Bool()
    livemode = Bool()


#: Families whose objects Stripe can answer with a deletion stub (only drafts and customers).
DELETABLE = frozenset({"invoice", "customer"})


class AnyObject(StripeField):
    """`previous_attributes`: any JSON object; only whether it is empty matters."""

    expected = "an object"

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, dict):
            self.fail(value)
        return value


def _envelope(object_schema: type[Schema]) -> Schema:
    data = type(
        f"{object_schema.__name__}Data",
        (Reading,),
        {
            "object": Obj(object_schema, required=True, allow_none=False),
            "previous_attributes": AnyObject(),
        },
    )
    envelope = type(
        f"{object_schema.__name__}Event",
        (Reading,),
        {
            "id": Id(required=True, allow_none=False),
            "type": Text(max_length=100, required=True, allow_none=False),
            "created": Timestamp(required=True, allow_none=False),
            "api_version": Text(max_length=64),
            "livemode": Bool(),
            "account": Id(),
            # Set by the worker on a snapshot it fetched from Stripe (handlers.ordering.FETCHED_AT).
            "_fetched_at": Timestamp(),
            # Set by the worker when that fetch found the object deleted (handlers.ordering.GONE_AT).
            "_gone_at": Timestamp(),
            "data": Obj(data, required=True, allow_none=False),
        },
    )
    return envelope()


_ENVELOPES = {family: _envelope(schema) for family, schema in OBJECT_READINGS.items()}
_PLANS = {family: compile_reading(envelope) for family, envelope in _ENVELOPES.items()}
_STUB_ENVELOPE = _envelope(DeletedObjectReading)
_STUB_PLAN = compile_reading(_STUB_ENVELOPE)


def _reads_as_stub(event, family: str) -> bool:
    data = event.get("data") if isinstance(event, dict) else None
    obj = data.get("object") if isinstance(data, dict) else None
    return family in DELETABLE and isinstance(obj, dict) and is_deletion_stub(obj)


def read_event_slowly(event, family: str) -> dict:
    """The same reading by marshmallow's own `Schema.load` (the reference `read_event` must match).

    :raises PermanentEventError: as read_event.
    """
    try:
        return (_STUB_ENVELOPE if _reads_as_stub(event, family) else _ENVELOPES[family]).load(event)
    except ValidationError as exc:
        raise PermanentEventError(first_error(exc.messages)) from None


def read_event(event, family: str) -> dict:
    """The event with `data.object` read as `family`.

    :raises PermanentEventError: a value is missing, of the wrong type or out of range; the
        message names its path and what was found.
    """
    if not isinstance(event, dict):
        raise PermanentEventError("event: expected an object")
    try:
        return load(_STUB_PLAN if _reads_as_stub(event, family) else _PLANS[family], event, "")
    except Refused as exc:
        raise PermanentEventError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - whatever breaks while reading is the payload's fault
        raise PermanentEventError(f"data.object: could not be read ({type(exc).__name__})") from None

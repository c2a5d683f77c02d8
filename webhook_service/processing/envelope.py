"""Reading a verified webhook body as a Stripe event envelope, and deciding whether we use it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

import handlers
import webhook_service.core.values

# `import handlers`, not `from handlers import …`: handlers imports webhook_service modules too.
from webhook_service.core.errors import InvalidPayload
from webhook_service.core.models import EventStatus

#: Stripe event ids are short; anything longer is not one and would not fit the log's key.
MAX_EVENT_ID_LENGTH = 255
#: The event log's column widths (models.StripeEvent): a longer value is not Stripe's, and is
#: refused here (400) rather than failing the INSERT (which would be a 503 that Stripe retries forever).
MAX_LENGTHS = {"type": 100, "api_version": 64, "account": 255, "object_id": 255}
THIN_EVENT_OBJECT = "v2.core.event"


@dataclass(frozen=True)
class Envelope:
    """What the event log records about an event, besides its raw payload."""

    id: str
    type: str
    api_version: str | None
    livemode: bool
    account: str | None
    object_id: str | None
    created: datetime | None
    status: EventStatus
    ignored_reason: str | None = None
    #: The customer whose rows the event touches (the object's own id when it has no customer):
    #: drains split their work by it, so two drains rarely need the same rows.
    owner_id: str | None = None


def _timestamp(value) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidPayload(f"Event created={value} is not a Unix timestamp.") from None


def _check_storable(envelope: Envelope) -> Envelope:
    for name, limit in MAX_LENGTHS.items():
        value = getattr(envelope, name)
        if value is not None and len(value) > limit:
            raise InvalidPayload(f"Event {envelope.id!r} has a {name} longer than {limit} characters.")
    for name in ("id", *MAX_LENGTHS):
        value = getattr(envelope, name)
        if value is not None and "\x00" in value:
            raise InvalidPayload(f"Event {name} contains a NUL character.")
    return envelope


def parse_envelope(body: bytes, accept_mode: str = "any") -> Envelope:
    """Parse a verified body into an Envelope, deciding between queued and ignored.

    :raises InvalidPayload: the body is not JSON, or not a Stripe event object.
    """
    try:
        # orjson accepts only UTF-8 (what Stripe sends and the log stores as text) and refuses lone
        # surrogates and NaN, which could not be stored or re-read either.
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidPayload("Body is not valid JSON (UTF-8 expected).") from None
    if not isinstance(data, dict):
        raise InvalidPayload("Body is JSON but not an object; expected a Stripe event.")
    kind = data.get("object")
    if kind not in ("event", THIN_EVENT_OBJECT):
        raise InvalidPayload(f"Body is not a Stripe event: object is {kind!r}, expected 'event'.")
    event_id, event_type = data.get("id"), data.get("type")
    if not isinstance(event_id, str) or not event_id or len(event_id) > MAX_EVENT_ID_LENGTH:
        raise InvalidPayload("Event has no usable id.")
    if not isinstance(event_type, str) or not event_type:
        raise InvalidPayload(f"Event {event_id!r} has no type.")
    livemode = data.get("livemode") is True
    common: dict[str, Any] = {
        "id": event_id,
        "type": event_type,
        "livemode": livemode,
        "account": data.get("account") if isinstance(data.get("account"), str) else None,
        "created": _timestamp(data.get("created")),
    }
    if kind == THIN_EVENT_OBJECT:
        related = data.get("related_object")
        related = related if isinstance(related, dict) else {}
        return _check_storable(
            Envelope(
                **common,
                api_version=None,
                object_id=related.get("id") if isinstance(related.get("id"), str) else None,
                status=EventStatus.IGNORED,
                ignored_reason="thin event: it carries no object to mirror; use a snapshot event destination",
            )
        )
    event_data = data.get("data")
    obj = event_data.get("object") if isinstance(event_data, dict) else None
    if not isinstance(obj, dict):
        raise InvalidPayload(f"Event {event_id!r} has no data.object.")
    object_id = obj.get("id") if isinstance(obj.get("id"), str) else None
    owner_id = webhook_service.core.values.object_id(obj.get("customer")) or object_id
    api_version = data.get("api_version") if isinstance(data.get("api_version"), str) else None
    # An id of the wrong type is the object's fault, not a preview's: queued, and refused by its reading.
    reason = _ignored_reason(event_type, obj.get("id"), livemode, accept_mode)
    return _check_storable(
        Envelope(
            **common,
            api_version=api_version,
            object_id=object_id,
            status=EventStatus.IGNORED if reason else EventStatus.QUEUED,
            ignored_reason=reason,
            owner_id=owner_id,
        )
    )


def _ignored_reason(event_type: str, object_id: object, livemode: bool, accept_mode: str) -> str | None:
    if accept_mode == "live" and not livemode:
        return "test-mode event while STRIPE_ACCEPT_MODE=live"
    if accept_mode == "test" and livemode:
        return "live-mode event while STRIPE_ACCEPT_MODE=test"
    if event_type not in handlers.HANDLED_TYPES:
        return f"event type {event_type} is not handled by this service"
    if object_id is None:
        # invoice.upcoming describes a preview that has no id and never becomes a row.
        return f"{event_type} carries an object without an id"
    return None

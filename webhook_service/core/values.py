"""Reading values out of Stripe payloads (plain dicts of any API version) defensively."""

from __future__ import annotations

from datetime import UTC, datetime

from webhook_service.core.errors import PermanentEventError


def is_deletion_stub(obj: dict) -> bool:
    """Stripe's answer for a deleted object (`{id, object, deleted: true}`, what a retrieve of a
    deleted customer or a DELETE of a draft returns): it says the object is gone and nothing else,
    so it must never overwrite mirrored values with absences."""
    return obj.get("deleted") is True and not set(obj) - {"id", "object", "deleted", "livemode"}


def int_or_zero(value) -> int:
    """An integer field, or 0 when absent or not an integer (counters, optional amounts)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def optional_int(obj: dict, name: str, what: str) -> int | None:
    """An amount that may be null but must otherwise be an integer.

    :raises PermanentEventError: the field holds something else (a malformed object).
    """
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise PermanentEventError(f"{what} {obj.get('id')}: {name} is {value!r}, expected an integer")
    return value


def timestamp(value) -> datetime | None:
    """A Unix timestamp field as an aware UTC datetime, or None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return datetime.fromtimestamp(value, UTC)


def object_id(value) -> str | None:
    """An id field that may be expanded into an object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def required_id(event: dict, what: str) -> str:
    """The event's object id.

    :raises PermanentEventError: the object has none (retrying cannot help).
    """
    value = event["data"]["object"].get("id")
    if not isinstance(value, str) or not value:
        raise PermanentEventError(f"{event['type']} {event['id']}: {what} has no id")
    return value


def required_status(obj: dict, allowed, what: str) -> str:
    """The object's status, which must be one we know.

    :raises PermanentEventError: an unknown status.
    """
    status = obj.get("status")
    if status not in allowed:
        raise PermanentEventError(f"{what} {obj.get('id')}: unknown status {status!r}")
    return str(status)

"""Reading filters from query strings, and keyset paging (no OFFSET, no COUNT over big tables)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

PAGE_SIZE = 50
_RELATIVE = re.compile(r"^(\d{1,5})\s*(m|min|h|d|w)$")
_RELATIVE_UNITS = {"m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: Printable, no spaces, the length of a column: anything else cannot name a row.
_ID_RE = re.compile(r"^[\x21-\x7e]{1,255}$")


class FormError(ValueError):
    """A filter the operator typed cannot be used; the page says which and why (400)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_time(raw: str | None, field: str, now: datetime | None = None) -> datetime | None:
    """A UTC time from a date, a `datetime-local` value, ISO 8601, or `2h` / `3d` ago."""
    value = (raw or "").strip()
    if not value:
        return None
    match = _RELATIVE.match(value.lower())
    if match:
        return (now or datetime.now(UTC)) - timedelta(seconds=int(match[1]) * _RELATIVE_UNITS[match[2]])
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise FormError(field, f"{value!r} is not a date (2026-11-30, 2026-11-30T14:00, 2h or 3d)") from None
    if not 1970 <= parsed.year <= 9999:
        raise FormError(field, f"{value!r} is out of range")
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_id(raw: str | None, field: str) -> str | None:
    """A Stripe id or portal id typed in a filter (trimmed); None when empty."""
    value = (raw or "").strip()
    if not value:
        return None
    if not _ID_RE.match(value):
        raise FormError(field, "an id has no spaces or control characters and at most 255 characters")
    return value


def parse_choice(raw: str | None, field: str, choices) -> str | None:
    value = (raw or "").strip()
    if not value:
        return None
    if value not in choices:
        raise FormError(field, f"{value!r} is not one of {', '.join(choices)}")
    return value


def parse_choices(values: list[str], field: str, choices) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in (parse_choice(raw, field, choices) for raw in values) if v))


def encode_cursor(key: datetime | str | None, row_id: str) -> str:
    """Where the next page starts: the last row's sort key (a time, or a text) and its id."""
    shown = key.astimezone(UTC).isoformat() if isinstance(key, datetime) else (key or "")
    return f"{shown}~{row_id}"


def decode_text_cursor(raw: str | None) -> tuple[str, str] | None:
    if not raw:
        return None
    key, sep, row_id = raw.rpartition("~")  # ids have no "~"; the key (a number) might
    if not sep or not row_id:
        raise FormError("after", "not a page position this console made")
    return key, row_id


def decode_cursor(raw: str | None) -> tuple[datetime | None, str] | None:
    parts = decode_text_cursor(raw)
    if parts is None:
        return None
    try:
        return (datetime.fromisoformat(parts[0]) if parts[0] else None), parts[1]
    except ValueError:
        raise FormError("after", "not a page position this console made") from None


def older_than(at_column, id_column, cursor: tuple[datetime | None, str]):
    """Rows after the cursor in (time, id) descending order.

    Written as `at <= x AND (at < x OR id < y)` so the time half is an index condition on
    PostgreSQL and SQLite: the page costs the same on the 1,000th page as on the first.
    """
    at, row_id = cursor
    if at is None:
        return sa.and_(at_column.is_(None), id_column < row_id)
    return sa.and_(at_column <= at, sa.or_(at_column < at, id_column < row_id))


def later_than(at_column, id_column, cursor: tuple[datetime | None, str]):
    """Rows after the cursor in (time, id) ascending order (the past-due triage list)."""
    at, row_id = cursor
    if at is None:
        return sa.and_(at_column.is_(None), id_column > row_id)
    return sa.and_(at_column >= at, sa.or_(at_column > at, id_column > row_id))

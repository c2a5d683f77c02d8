"""Jinja filters: amounts in a currency's major unit, UTC times, first lines of errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from webhook_service.core.errors import error_summary

#: Stripe's zero- and three-decimal currencies; every other currency has two decimals.
_ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
_THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())
#: What an error's first line is cut to in lists (the event page shows all of it).
ERROR_LINE_LENGTH = 200


def money(amount: int | None, currency: str | None) -> str:
    """`1,234.56 EUR` from minor units; `-` when there is no amount."""
    if amount is None:
        return "-"
    code = (currency or "").lower()
    decimals = 0 if code in _ZERO_DECIMAL else 3 if code in _THREE_DECIMAL else 2
    value = amount / (10**decimals)
    return f"{value:,.{decimals}f} {code.upper()}".strip()


def when(value: datetime | None, seconds: bool = False) -> str:
    """`2026-11-30 14:05 UTC`; `-` when unset."""
    if value is None:
        return "-"
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def day(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d")


def iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat()


def age(value: datetime | None, now: datetime | None = None) -> str:
    """How long ago, roughly: `45 s`, `12 min`, `3 h`, `5 d`."""
    if value is None:
        return "-"
    seconds = max(0, int(((now or datetime.now(UTC)) - value).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def first_line(text: str | None, length: int = ERROR_LINE_LENGTH) -> str:
    """The first non-empty line of an error, cut to `length` characters."""
    if not text:
        return ""
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line if len(line) <= length else line[: length - 1] + "…"


def error_line(text: str | None) -> str:
    """An event's error as lists show it: the first line, without SQL text or echoed values."""
    return first_line(error_summary(text)) if text else ""


def pretty_json(raw: str | dict | None) -> str:
    """A payload indented for reading; text that is not JSON is shown as it is."""
    if raw is None:
        return ""
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return str(raw)
    return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False)


def safe_url(url: str | None) -> str | None:
    """An https (or http) link from a payload, or None: never a `javascript:` or other scheme."""
    if url and url.lower().startswith(("https://", "http://")):
        return url
    return None


FILTERS = {
    "money": money,
    "when": when,
    "day": day,
    "iso": iso,
    "age": age,
    "first_line": first_line,
    "error_line": error_line,
    "pretty_json": pretty_json,
    "safe_url": safe_url,
}

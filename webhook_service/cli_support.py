"""What the operator commands share: app start-up, times, type names, tables, progress, the actor."""

from __future__ import annotations

import difflib
import json
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import click

from webhook_service import startup
from webhook_service.core.errors import error_summary

if TYPE_CHECKING:  # commands load the app stack when they run, not at import (fast `--help`)
    from flask import Flask

#: Relative times: a number and a unit, meaning that long ago (`90m`, `2h`, `3d`, `1w`).
_RELATIVE = re.compile(r"^\s*(\d+)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}
#: What an operator command says when Stripe refuses its key: Stripe's own message would echo
#: part of the key (`sk_test_****abcd`), so it is never shown.
REFUSED_KEY = {
    401: "Stripe refused STRIPE_API_KEY (HTTP 401): the key is wrong, revoked or for another account",
    403: "STRIPE_API_KEY may not read this list (HTTP 403): give the restricted key read access to "
    "customers, invoices and credit notes (or check that --account is connected)",
}
WHEN_HELP = "a date or time in UTC (2026-11-01, 2026-11-01T12:00) or a time ago (30m, 2h, 3d, 1w)"


def build_app_or_exit(**kwargs) -> Flask:
    """startup.build_app_or_exit, with the app's connections released when the command ends."""
    app = startup.build_app_or_exit(**kwargs)
    ctx = click.get_current_context(silent=True)
    if ctx is not None:  # matters when commands run in-process (tests, demo)
        ctx.call_on_close(lambda: startup.close_clients(app))
    return app


def parse_when(value: str, now: datetime | None = None) -> datetime:
    """An ISO date/time (UTC unless it says otherwise) or a relative time ago, as aware UTC.

    :raises ValueError: neither form.
    """
    match = _RELATIVE.match(value)
    if match:
        amount, unit = int(match.group(1)), _UNITS[match.group(2).lower()]
        return (now or datetime.now(UTC)) - timedelta(**{unit: amount})
    parsed = datetime.fromisoformat(value.strip())
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class When(click.ParamType):
    """A click parameter for `--since` / `--until`."""

    name = "WHEN"

    def convert(self, value, param, ctx):
        if isinstance(value, datetime):
            return value
        try:
            return parse_when(value)
        except ValueError:
            self.fail(f"expected a date like 2026-11-01 or 2026-11-01T12:00, or a time ago like 2h or 3d; "
                      f"got {value!r}", param, ctx)  # fmt: skip


WHEN = When()


def check_range(since: datetime | None, until: datetime | None) -> None:
    if since and until and since >= until:
        raise click.UsageError(f"--since ({since.isoformat()}) must be before --until ({until.isoformat()})")


def warn_unknown_types(types: Iterable[str], known: Iterable[str]) -> None:
    """A note on stderr for each type the service does not handle (a typo filters out everything)."""
    known = sorted(known)
    for event_type in types:
        if event_type in known:
            continue
        close = difflib.get_close_matches(event_type, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else "; its events are recorded as ignored"
        click.echo(f"warning: {event_type} is not an event type the service handles{hint}", err=True)


def current_actor() -> str:
    """Who runs this command: --actor / WEBHOOK_SERVICE_ACTOR, else `cli:<OS user>`."""
    from webhook_service.processing import audit

    ctx = click.get_current_context(silent=True)
    named = ctx.find_root().params.get("actor") if ctx is not None else None
    return named or audit.default_actor()


def print_table(rows: Sequence[dict], columns: Sequence[str], *, as_json: bool) -> None:
    """Rows as aligned columns, or as one JSON array (`--json`)."""
    if as_json:
        click.echo(json.dumps(list(rows), indent=2, default=str))
        return
    widths = {c: max([len(c)] + [len(_cell(r.get(c))) for r in rows]) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        click.echo("  ".join(_cell(row.get(c)).ljust(widths[c]) for c in columns).rstrip())


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value)


def follow(total: int, done: Callable[[], int], *, label: str, stalled_after: float = 60.0,
           poll: float = 0.5, step: Callable[[], None] | None = None) -> int:  # fmt: skip
    """Show progress until `done()` reaches `total`: a bar with an ETA on a terminal, else a line every
    few seconds. `step` (optional) does a unit of the work itself between polls. Returns the last
    `done()`; stops early when nothing moved for `stalled_after` seconds."""
    last, moved_at, printed_at = 0, time.monotonic(), 0.0
    tty = sys.stdout.isatty()
    bar = click.progressbar(length=total, label=label, show_eta=True, show_pos=True) if tty else None
    started = time.monotonic()
    try:
        if bar is not None:
            bar.__enter__()
        while last < total:
            if step is not None:
                step()
            else:
                time.sleep(poll)
            current = min(done(), total)
            now = time.monotonic()
            if current > last:
                if bar is not None:
                    bar.update(current - last)
                last, moved_at = current, now
            if bar is None and (now - printed_at >= 2.0 or last >= total):
                rate = last / max(now - started, 1e-9)
                eta = f", about {(total - last) / rate:.0f}s left" if rate > 0 and last < total else ""
                click.echo(f"{label}: {last}/{total} ({rate:,.0f}/s{eta})")
                printed_at = now
            if now - moved_at > stalled_after:
                break
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    return last


def error_first_line(error: str | None, width: int = 100) -> str | None:
    """A stored error for a list: its first line without SQL or values (error_summary), cut to `width`."""
    if not error:
        return None
    first = error_summary(error)
    return first if len(first) <= width else first[: width - 1] + "…"

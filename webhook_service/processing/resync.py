"""Backfill the event log from Stripe's Events API (GET /v1/events, kept by Stripe for 30 days).

Plain `requests` rather than the SDK: we want the raw event JSON (never StripeObjects), and a
retry policy for 429s, which the SDK only retries when Stripe says `Stripe-Should-Retry: true`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import requests
import sqlalchemy as sa

from webhook_service.core.errors import ServiceError
from webhook_service.core.models import EventStatus, StripeEvent
from webhook_service.processing import eventlog
from webhook_service.processing.db import Database
from webhook_service.processing.envelope import parse_envelope
from webhook_service.processing.queue import EventQueue

logger = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://api.stripe.com"
#: Stripe lists events going back 30 days.
RETENTION = timedelta(days=30)
#: The list endpoint's maximum page size.
PAGE_SIZE = 100
#: The list endpoint accepts at most this many `types[]`.
MAX_TYPES_PER_REQUEST = 20
#: Attempts per page before giving up; waits double from 1 s (or follow Retry-After), capped.
MAX_ATTEMPTS = 6
MAX_WAIT_SECONDS = 30.0
REQUEST_TIMEOUT_SECONDS = 30


class StripeAPIError(ServiceError):
    """Stripe answered with an error we should not retry, or kept failing."""

    status_code = 502
    code = "stripe_api_error"


@dataclass
class ResyncReport:
    """Counts for the operator."""

    since: datetime
    listed: int = 0
    already_logged: int = 0
    recorded: dict[str, int] = field(default_factory=dict)  # status → count
    clamped: bool = False

    @property
    def missing(self) -> int:
        return self.listed - self.already_logged


class StripeEventsClient:
    """Pages through GET /v1/events with rate-limit-aware retries."""

    def __init__(
        self,
        api_key: str,
        api_base: str | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.api_key = api_key
        self.api_base = (api_base or DEFAULT_API_BASE).rstrip("/")
        self.session = session or requests.Session()
        self.sleep = sleep

    def iter_events(self, since: datetime, types: Sequence[str]) -> Iterator[dict]:
        """Every event created at or after `since` of the given types, newest first."""
        for start in range(0, max(len(types), 1), MAX_TYPES_PER_REQUEST):
            chunk = list(types[start : start + MAX_TYPES_PER_REQUEST])
            starting_after = None
            while True:
                params: list[tuple[str, str]] = [
                    ("created[gte]", str(int(since.timestamp()))),
                    ("limit", str(PAGE_SIZE)),
                ]
                params += [("types[]", t) for t in chunk]
                if starting_after:
                    params.append(("starting_after", starting_after))
                page = self._get("/v1/events", params)
                data = page.get("data") or []
                yield from data
                if not page.get("has_more") or not data:
                    break
                starting_after = data[-1]["id"]

    def _get(self, path: str, params: list[tuple[str, str]]) -> dict:
        wait = 1.0
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                response = self.session.get(
                    self.api_base + path,
                    params=params,
                    headers={"Authorization": f"Bearer {self.api_key}"},
                    timeout=REQUEST_TIMEOUT_SECONDS,
                )
            except requests.RequestException as exc:
                reason = f"{type(exc).__name__}"
                should_retry = True
            else:
                if response.status_code == 200:
                    return response.json()
                reason = f"HTTP {response.status_code}: {_error_message(response)}"
                hint = response.headers.get("Stripe-Should-Retry")
                if hint is not None:
                    should_retry = hint == "true"
                else:
                    should_retry = response.status_code in (409, 429) or response.status_code >= 500
                retry_after = response.headers.get("Retry-After")
                if retry_after and retry_after.isdigit():
                    wait = max(wait, float(retry_after))
            if not should_retry or attempt == MAX_ATTEMPTS:
                raise StripeAPIError(f"Stripe Events API failed after {attempt} attempt(s): {reason}")
            logger.warning("Stripe Events API: %s; retrying in %.1fs (attempt %d)", reason, wait, attempt)
            self.sleep(wait)
            wait = min(wait * 2, MAX_WAIT_SECONDS)
        raise AssertionError("unreachable")


def _error_message(response: requests.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return response.reason or "error"


def resync(
    db: Database,
    queue: EventQueue,
    client: StripeEventsClient,
    since: datetime,
    types: Sequence[str],
    accept_mode: str = "any",
    dry_run: bool = False,
    now: datetime | None = None,
) -> ResyncReport:
    """Record the listed events the log does not have yet, and wake a drain for them."""
    current = now or datetime.now(UTC)
    earliest = current - RETENTION
    report = ResyncReport(since=max(since, earliest), clamped=since < earliest)
    page: list[dict] = []
    for event in client.iter_events(report.since, types):
        page.append(event)
        if len(page) >= PAGE_SIZE:
            _record_page(db, page, report, accept_mode, dry_run)
            page = []
    _record_page(db, page, report, accept_mode, dry_run)
    if not dry_run and report.recorded.get(EventStatus.QUEUED.value):
        queue.request_drain()
    return report


def _record_page(
    db: Database, events: list[dict], report: ResyncReport, accept_mode: str, dry_run: bool
) -> None:
    if not events:
        return
    report.listed += len(events)
    ids = [event["id"] for event in events]
    with db.sessions() as session:
        known = set(session.scalars(sa.select(StripeEvent.id).where(StripeEvent.id.in_(ids))))
    report.already_logged += len(known)
    for event in events:
        if event["id"] in known:
            continue
        body = json.dumps(event, separators=(",", ":")).encode()
        envelope = parse_envelope(body, accept_mode)
        if not dry_run and not eventlog.record_event(db.engine, envelope, body):
            report.already_logged += 1  # a webhook delivery won the race: fine, it is logged
            continue
        report.recorded[envelope.status.value] = report.recorded.get(envelope.status.value, 0) + 1

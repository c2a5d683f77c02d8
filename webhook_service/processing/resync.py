"""Backfill the event log from Stripe's Events API (GET /v1/events, kept by Stripe for 30 days).

Through processing/stripe_client.py, the one client for Stripe's API (raw JSON, the shared
request budget, one retry policy); see docs/design.md §7.
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

from webhook_service.core.errors import StripeAPIError
from webhook_service.core.models import EventStatus, StripeEvent
from webhook_service.processing import eventlog
from webhook_service.processing.db import Database
from webhook_service.processing.envelope import parse_envelope
from webhook_service.processing.queue import EventQueue
from webhook_service.processing.stripe_budget import RequestBudget
from webhook_service.processing.stripe_client import StripeClient

logger = logging.getLogger(__name__)

#: Stripe lists events going back 30 days.
RETENTION = timedelta(days=30)
#: Events recorded per database round trip.
PAGE_SIZE = 100
#: The list endpoint accepts at most this many `types[]`.
MAX_TYPES_PER_REQUEST = 20
#: Attempts per page before the command gives up, and the longest sleep between two (Retry-After
#: included): an operator can wait longer than a worker (stripe_client.MAX_ATTEMPTS, MAX_SLEEP_SECONDS).
MAX_ATTEMPTS = 6
MAX_WAIT_SECONDS = 30.0

__all__ = ["StripeAPIError", "StripeEventsClient", "resync", "ResyncReport"]


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
    """Pages through GET /v1/events with the one Stripe client (its budget and retry policy).

    An operator's resync may wait longer for Stripe than a worker: more attempts, longer sleeps.
    """

    def __init__(
        self,
        api_key: str,
        api_base: str | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        budget: RequestBudget | None = None,
    ):
        self.client = StripeClient(
            api_key,
            api_base,
            budget=budget,
            session=session,
            sleep=sleep,
            max_attempts=MAX_ATTEMPTS,
            max_sleep=MAX_WAIT_SECONDS,
        )

    def iter_events(self, since: datetime, types: Sequence[str]) -> Iterator[dict]:
        """Every event created at or after `since` of the given types, newest first."""
        for start in range(0, max(len(types), 1), MAX_TYPES_PER_REQUEST):
            chunk = list(types[start : start + MAX_TYPES_PER_REQUEST])
            params = [("created[gte]", str(int(since.timestamp())))] + [("types[]", t) for t in chunk]
            yield from self.client.list_all("/v1/events", params)


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

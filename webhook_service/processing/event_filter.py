"""One filter over the event log, shared by `events list`, replay, the read API and the console."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from webhook_service.core.models import StripeEvent


@dataclass(frozen=True)
class EventFilter:
    """Events received in [since, until) with any of the statuses and types (empty = any)."""

    statuses: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    object_id: str | None = None

    def apply(self, stmt: sa.Select) -> sa.Select:
        """Add this filter's conditions to a SELECT over `stripe_events`."""
        if self.statuses:
            stmt = stmt.where(StripeEvent.status.in_(self.statuses))
        if self.types:
            stmt = stmt.where(StripeEvent.type.in_(self.types))
        if self.since is not None:
            stmt = stmt.where(StripeEvent.received_at >= self.since)
        if self.until is not None:
            stmt = stmt.where(StripeEvent.received_at < self.until)
        if self.object_id:
            stmt = stmt.where(StripeEvent.object_id == self.object_id)
        return stmt

    def describe(self) -> dict:
        """The filter as audit parameters (only what is set)."""
        shown: dict = {}
        if self.statuses:
            shown["status"] = list(self.statuses)
        if self.types:
            shown["type"] = list(self.types)
        if self.since is not None:
            shown["since"] = self.since.isoformat()
        if self.until is not None:
            shown["until"] = self.until.isoformat()
        if self.object_id:
            shown["object_id"] = self.object_id
        return shown

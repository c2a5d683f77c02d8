"""RQ job for the daily prune of the event log (registered by the scheduler process)."""

from __future__ import annotations

from webhook_service.processing import retention
from webhook_service.web.services import get_services


def prune_events() -> dict:
    """Remove processed and ignored events older than EVENT_RETENTION_DAYS, in batches."""
    services = get_services()
    days = services.config.event_retention_days
    return retention.prune_events(services.db, older_than_days=days, actor="scheduler").as_dict()

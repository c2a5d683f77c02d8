"""RQ job for the daily past-due sweep (registered by the scheduler process)."""

from __future__ import annotations

from webhook_service.processing.sweep import sweep_past_due as run_sweep
from webhook_service.web.services import get_services


def sweep_past_due() -> int:
    """Move open invoices whose due date passed to past due."""
    return run_sweep(get_services().db)

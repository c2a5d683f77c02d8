"""RQ job for the daily past-due sweep (registered by the scheduler process)."""

from __future__ import annotations

from webhook_service.services import get_services
from webhook_service.sweep import sweep_past_due as run_sweep


def sweep_past_due() -> int:
    """Move open invoices whose due date passed to past due."""
    return run_sweep(get_services().db)

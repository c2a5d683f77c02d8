"""RQ job for the daily reconcile (RECONCILE_TIME; registered by the scheduler process)."""

from __future__ import annotations

import logging
from datetime import timedelta

from webhook_service.core.config import Config
from webhook_service.core.models import utcnow
from webhook_service.processing import reconcile
from webhook_service.web.services import get_services

logger = logging.getLogger(__name__)

#: A run pages the window's invoices and fetches each customer once, on the shared request
#: budget: 100,000 invoices and 30,000 customers take about 25 minutes at 25 requests/s.
JOB_TIMEOUT_SECONDS = 2 * 3600


def reconcile_mirror(days: int | None = None, repair: bool | None = None) -> dict:
    """Compare the last `days` days of invoices with Stripe; repair when `repair` says so.

    Both come with the job from the scheduler that registered it (its RECONCILE_DAYS and
    RECONCILE_REPAIR), so the run is the one the scheduler announced whatever the worker was
    started with; a job without them (registered by an older release) takes the worker's.

    :raises StripeAPIError: Stripe kept failing; the job fails (the audit trail says so) and the
        next day's run tries again.
    """
    services = get_services()
    config = services.config
    days = config.reconcile_days if days is None else days
    repair = config.reconcile_repair if repair is None else repair
    client = reconcile.build_reconcile_client(config, services.queue.connection)
    if client is None:  # startup refuses this, unless the key was removed since
        raise RuntimeError("RECONCILE_TIME is set but STRIPE_API_KEY is not")
    window = reconcile.Window(since=utcnow() - timedelta(days=days))
    report = reconcile.reconcile(
        services.db,
        services.queue,
        client,
        window,
        actor="scheduler",
        repair=repair,
        accept_mode=config.accept_mode,
    )
    if report.drift_found:  # counts by field only: no ids or amounts in the log
        logger.warning(
            "reconcile found drift",
            extra={
                "fields": {"run_id": report.run_id, "drift": report.counts(), "repaired": report.repaired}
            },
        )
    return {"run_id": report.run_id, "drift": report.counts(), "repaired": report.repaired}


def schedule(cron, config: Config) -> str | None:
    """Register the daily reconcile on the scheduler's cron (UTC) when RECONCILE_TIME is set; say what.

    rq's cron does not catch up a missed run: after scheduler downtime the next day's run covers
    the same window (or run `webhook-service reconcile`).
    """
    if not config.reconcile_time_utc:
        return None
    hour, minute = config.reconcile_time_utc.split(":")
    cron.register(
        reconcile_mirror,
        queue_name=config.queue_name,
        kwargs={"days": config.reconcile_days, "repair": config.reconcile_repair},
        cron=f"{int(minute)} {int(hour)} * * *",
        job_timeout=JOB_TIMEOUT_SECONDS,
    )
    repairs = "repairing" if config.reconcile_repair else "reporting only"
    days, at = config.reconcile_days, config.reconcile_time_utc
    return f"reconcile of the last {days} days daily at {at} UTC ({repairs})"

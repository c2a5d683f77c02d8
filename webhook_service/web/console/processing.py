"""Processing: queue depth, backlog age, workers, and the pause switch."""

from __future__ import annotations

from datetime import datetime

import redis
import sqlalchemy as sa
from flask import flash, redirect, render_template, request, url_for
from rq import Worker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

from webhook_service.core.models import EventStatus, StripeEvent, utcnow
from webhook_service.processing import pause
from webhook_service.web.console.auth import acting_operator
from webhook_service.web.console.blueprint import bp
from webhook_service.web.services import get_services

#: Counts stop here ("100,000+"): a backlog of millions must not cost a scan of millions.
COUNT_CAP = 100_000
_REASON_LENGTH = 500


def bounded_count(session, status: str, cap: int = COUNT_CAP) -> int:
    """Events in a status, counted up to `cap` + 1 along the (status, received_at) index."""
    capped = sa.select(sa.literal(1)).where(StripeEvent.status == status).limit(cap + 1).subquery()
    return session.scalar(sa.select(sa.func.count()).select_from(capped)) or 0


def _oldest(session, status: str) -> datetime | None:
    stmt = (
        sa.select(StripeEvent.received_at)
        .where(StripeEvent.status == status)
        .order_by(StripeEvent.received_at)
        .limit(1)
    )
    return session.scalar(stmt)


def backlog(session) -> dict:
    """Depth and age of the work owed: queued events, retrying ones, and those whose retry is late."""
    now = utcnow()
    oldest = [t for t in (_oldest(session, s) for s in (EventStatus.QUEUED, EventStatus.RETRYING)) if t]
    overdue = session.scalar(
        sa.select(StripeEvent.next_attempt_at)
        .where(StripeEvent.status == EventStatus.RETRYING.value, StripeEvent.next_attempt_at < now)
        .order_by(StripeEvent.next_attempt_at)
        .limit(1)
    )
    return {
        "counts": {s: bounded_count(session, s) for s in ("queued", "retrying", "failed")},
        "oldest": min(oldest) if oldest else None,
        "oldest_overdue_retry": overdue,
        "now": now,
    }


def queue_state() -> dict:
    """What Redis says: jobs waiting, scheduled retries, failed jobs, workers; or that it is down."""
    queue = get_services().queue
    try:
        workers = Worker.all(connection=queue.connection, queue=queue.queue)
        return {
            "reachable": True,
            "embedded": queue.embedded,
            "jobs": queue.queue.count,
            "scheduled": ScheduledJobRegistry(queue=queue.queue).count,
            "failed_jobs": FailedJobRegistry(queue=queue.queue).count,
            "workers": sorted(
                ({"name": w.name, "state": w.get_state(), "heartbeat": w.last_heartbeat} for w in workers),
                key=lambda w: w["name"],
            ),
        }
    except redis.RedisError as exc:
        return {"reachable": False, "embedded": queue.embedded, "error": type(exc).__name__}


@bp.get("/processing")
def processing_show():
    services = get_services()
    with services.db.sessions() as session:
        owed = backlog(session)
    return render_template(
        "console/processing.html",
        backlog=owed,
        cap=COUNT_CAP,
        queue=queue_state(),
        state=pause.get_state(services.db),
    )


@bp.post("/processing/pause")
def processing_pause():
    """Stop the drains at their next batch boundary; the receiver keeps recording."""
    reason = (request.form.get("reason") or "").strip()[:_REASON_LENGTH] or None
    pause.pause(get_services().db, actor=acting_operator().actor, reason=reason)
    flash("Processing is paused. Deliveries are still recorded; resume to process them.", "ok")
    return redirect(url_for("console.processing_show"))


@bp.post("/processing/resume")
def processing_resume():
    services = get_services()
    pause.resume(services.db, services.queue, actor=acting_operator().actor)
    flash("Processing resumed; the drains are working through the backlog.", "ok")
    return redirect(url_for("console.processing_show"))

"""Prometheus metrics, read from the event log and Redis at scrape time.

Counting from the database rather than in-process counters gives one consistent view across
gunicorn workers, RQ work-horses and machines, with no multiprocess bookkeeping.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from flask import Blueprint, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

from webhook_service.core.models import EventStatus, Invoice, StripeEvent, utcnow
from webhook_service.web.services import Services, get_services

bp = Blueprint("metrics", __name__)

#: Queue latency is reported over events processed this recently.
LATENCY_WINDOW = timedelta(minutes=5)
#: At most this many recent events feed the latency quantiles (bounded scrape cost).
LATENCY_SAMPLE = 10_000


class EventLogCollector:
    """Collects counts by type and status, queue depth and queue latency on each scrape."""

    def __init__(self, services: Services):
        self.services = services

    def collect(self):
        received = CounterMetricFamily(
            "stripe_webhook_events_received", "Events accepted, by type", labels=["type"]
        )
        by_status = GaugeMetricFamily(
            "stripe_webhook_events", "Events in the log by type and status", labels=["type", "status"]
        )
        processed = CounterMetricFamily(
            "stripe_webhook_events_processed", "Events processed, by type", labels=["type"]
        )
        failed = CounterMetricFamily(
            "stripe_webhook_events_failed", "Events failed for good, by type", labels=["type"]
        )
        latency = GaugeMetricFamily(
            "stripe_webhook_queue_latency_seconds",
            "Received-to-processed time of events processed in the last 5 minutes",
            labels=["quantile"],
        )
        oldest = GaugeMetricFamily(
            "stripe_webhook_oldest_pending_seconds", "Age of the oldest unprocessed event"
        )
        totals: dict[str, int] = {}
        with self.services.db.sessions() as session:
            rows = session.execute(
                sa.select(StripeEvent.type, StripeEvent.status, sa.func.count()).group_by(
                    StripeEvent.type, StripeEvent.status
                )
            ).all()
            now = utcnow()
            recent = session.execute(
                sa.select(StripeEvent.received_at, StripeEvent.processed_at)
                .where(
                    StripeEvent.status == EventStatus.PROCESSED.value,
                    StripeEvent.received_at >= now - LATENCY_WINDOW * 12,
                    StripeEvent.processed_at >= now - LATENCY_WINDOW,
                )
                .order_by(StripeEvent.received_at.desc())
                .limit(LATENCY_SAMPLE)
            ).all()
            first_pending = session.scalar(
                sa.select(sa.func.min(StripeEvent.received_at)).where(
                    StripeEvent.status == EventStatus.QUEUED.value
                )
            )
        for event_type, status, count in rows:
            by_status.add_metric([event_type, status], count)
            totals[event_type] = totals.get(event_type, 0) + count
            if status == EventStatus.PROCESSED.value:
                processed.add_metric([event_type], count)
            elif status == EventStatus.FAILED.value:
                failed.add_metric([event_type], count)
        for event_type, count in sorted(totals.items()):
            received.add_metric([event_type], count)
        waits = sorted((done - got).total_seconds() for got, done in recent if done is not None)
        for label, q in (("0.5", 0.5), ("0.99", 0.99), ("1", 1.0)):
            latency.add_metric([label], waits[min(len(waits) - 1, int(q * len(waits)))] if waits else 0.0)
        oldest.add_metric([], (utcnow() - first_pending).total_seconds() if first_pending else 0.0)
        yield from (received, by_status, processed, failed, latency, oldest)
        yield from queue_metrics(self.services)
        yield from mirror_metrics(self.services)


def mirror_metrics(services: Services):
    """Mirror rows that are not yet Stripe's whole object (a partial-index count, cheap at any size)."""
    incomplete = GaugeMetricFamily(
        "stripe_webhook_invoices_lines_incomplete",
        "Invoices whose mirrored lines are only a first page (no STRIPE_API_KEY to page the rest)",
    )
    with services.db.sessions() as session:
        stmt = sa.select(sa.func.count()).select_from(Invoice).where(sa.not_(Invoice.lines_complete))
        count = session.scalar(stmt)
    incomplete.add_metric([], count or 0)
    return (incomplete,)


def queue_metrics(services: Services):
    """RQ queue depth, scheduled retries and failed jobs."""
    queue = services.queue.queue
    depth = GaugeMetricFamily("stripe_webhook_queue_depth", "Jobs waiting in the RQ queue")
    depth.add_metric([], queue.count)
    scheduled = GaugeMetricFamily("stripe_webhook_scheduled_jobs", "Retries waiting for their time")
    scheduled.add_metric([], ScheduledJobRegistry(queue=queue).count)
    failed_jobs = GaugeMetricFamily("stripe_webhook_failed_jobs", "Jobs in RQ's failed registry")
    failed_jobs.add_metric([], FailedJobRegistry(queue=queue).count)
    return depth, scheduled, failed_jobs


@bp.get("/metrics")
def metrics():
    """Prometheus text exposition."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EventLogCollector(get_services()))
    return Response(generate_latest(registry), mimetype="text/plain; version=0.0.4; charset=utf-8")

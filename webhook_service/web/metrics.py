"""GET /metrics: Prometheus text, the same figures whichever web process on whichever machine answers.

Counters come from `metric_counters` (processing/counters.py: moved in the transaction of the work
they count, so they only go up), backlog figures from bounded index lookups (processing/backlog.py),
liveness from the heartbeat table. Nothing here scans the event log, so a scrape costs the same with
ten million events as with ten (bench/metrics_scrape.py). Redis figures are added when Redis
answers; when it does not, the database's figures are still served, with `stripe_webhook_redis_up 0`.
"""

from __future__ import annotations

import logging

import redis
import sqlalchemy as sa
from flask import Blueprint, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

from webhook_service.core.models import Invoice
from webhook_service.processing import backlog, counters, heartbeats, pause, reconcile
from webhook_service.web import rejections
from webhook_service.web.services import Services, get_services

logger = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__)

#: (metric family, counter name, label name, help)
_COUNTERS = (
    ("stripe_webhook_events_received", counters.RECEIVED, "type",
     "New events recorded (duplicates not counted)"),
    ("stripe_webhook_events_ignored", counters.IGNORED, "type",
     "Events recorded as ignored (unhandled type, other mode, thin)"),
    ("stripe_webhook_events_processed", counters.PROCESSED, "type",
     "Events processed (a replayed event counts again)"),
    ("stripe_webhook_events_failed", counters.FAILED, "type",
     "Events that failed for good (retries spent, or malformed)"),
    ("stripe_webhook_event_retries", counters.RETRIED, "type",
     "Failed attempts that were given a retry"),
    ("stripe_webhook_deliveries_rejected", counters.REJECTED, "reason",
     "Deliveries answered 4xx, by reason"),
)  # fmt: skip


def _gauge(name: str, help_text: str, value: float | None = None, labels=()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value, labels=labels or None)


class ServiceCollector:
    """Reads every figure at scrape time: one database session, then Redis."""

    def __init__(self, services: Services):
        self.services = services

    def collect(self):
        yield from self._database()
        yield from self._redis()

    def _database(self):
        try:
            with self.services.db.sessions() as session:
                values = counters.totals(session)
                owed = backlog.read(session)
                roles = heartbeats.by_role(session)
                paused = pause.is_paused(session)
                incomplete = session.scalar(
                    sa.select(sa.func.count()).select_from(Invoice).where(sa.not_(Invoice.lines_complete))
                )
                run = reconcile.last_run(session)
                last_reconcile = (run.finished_at, dict(run.drift or {})) if run is not None else None
        except sa.exc.SQLAlchemyError as exc:
            logger.warning("metrics: database unavailable (%s)", type(exc).__name__)
            yield _gauge("stripe_webhook_database_up", "Whether this scrape could read the database", 0)
            return
        yield _gauge("stripe_webhook_database_up", "Whether this scrape could read the database", 1)
        for family, name, label, help_text in _COUNTERS:
            metric = CounterMetricFamily(family, help_text, labels=[label])
            for (counter, value_label), value in sorted(values.items()):
                if counter == name:
                    metric.add_metric([value_label], value)
            yield metric
        buckets, _count, total = counters.histogram(values)
        yield HistogramMetricFamily(
            "stripe_webhook_processing_latency_seconds",
            "Receipt to processed, of events processed at their first attempt (no retries, no replays)",
            buckets=buckets,
            sum_value=total,
        )
        yield _gauge(
            "stripe_webhook_backlog_age_seconds",
            "Age of the oldest event still owed processing (queued or retrying, overdue included)",
            owed.age_seconds,
        )
        counts = _gauge("stripe_webhook_backlog_events", "Events owed processing", labels=["status"])
        counts.add_metric(["queued"], owed.queued)
        counts.add_metric(["retrying"], owed.retrying)
        counts.add_metric(["overdue"], owed.overdue)
        yield counts
        yield _gauge(
            "stripe_webhook_retry_overdue_seconds",
            "How long the most overdue retry is past its due time (a lost or stuck retry)",
            owed.retry_overdue_seconds,
        )
        yield _gauge("stripe_webhook_failed_events", "Events failed for good, awaiting a replay", owed.failed)
        last = _gauge(
            "stripe_webhook_last_heartbeat_timestamp_seconds",
            "Unix time of the latest heartbeat of any process of the role",
            labels=["role"],
        )
        alive = _gauge(
            "stripe_webhook_processes",
            f"Processes of the role that beat in the last {heartbeats.ALIVE_WITHIN.total_seconds():.0f} s",
            labels=["role"],
        )
        for role, health in roles.items():
            if health.last_beat is not None:
                last.add_metric([role], health.last_beat.timestamp())
            alive.add_metric([role], health.alive)
        yield last
        yield alive
        yield _gauge("stripe_webhook_paused", "1 while processing is paused (drains stop)", int(paused))
        yield _gauge(
            "stripe_webhook_invoices_lines_incomplete",
            "Invoices whose mirrored lines are only a first page (no STRIPE_API_KEY to page the rest)",
            incomplete or 0,
        )
        yield from _reconcile_figures(values, last_reconcile)

    def _redis(self):
        queue = self.services.queue.queue
        try:
            depth = queue.count
            scheduled = ScheduledJobRegistry(queue=queue).count
            failed = FailedJobRegistry(queue=queue).count
        except redis.RedisError as exc:
            logger.warning("metrics: Redis unavailable (%s)", type(exc).__name__)
            yield _gauge("stripe_webhook_redis_up", "Whether this scrape could read Redis", 0)
            return
        yield _gauge("stripe_webhook_redis_up", "Whether this scrape could read Redis", 1)
        yield _gauge("stripe_webhook_queue_depth", "Jobs waiting in the RQ queue", depth)
        yield _gauge("stripe_webhook_scheduled_jobs", "Retries waiting for their time in RQ", scheduled)
        yield _gauge("stripe_webhook_failed_jobs", "Jobs in RQ's failed registry", failed)


def _reconcile_figures(values, last_run):
    """The last finished `reconcile`: drift by field (0 for fields without), when it finished;
    and the objects repairs recorded, a counter. No run yet: the families without samples."""
    drift = _gauge(
        "stripe_webhook_reconcile_drift",
        "Objects whose mirrored value differed from Stripe's, by field, in the last finished reconcile",
        labels=["field"],
    )
    finished = None
    if last_run is not None:
        finished, counts = last_run
        for name in reconcile.DRIFT_FIELDS:
            drift.add_metric([name], counts.get(name, 0))
    yield drift
    yield _gauge(
        "stripe_webhook_reconcile_last_run_timestamp_seconds",
        "Unix time the last reconcile finished",
        finished.timestamp() if finished is not None else None,
    )
    yield CounterMetricFamily(
        "stripe_webhook_reconcile_repaired",
        "Fetched objects reconcile --repair recorded for the drains to apply",
        value=values.get((counters.RECONCILE_REPAIRED, ""), 0),
    )


@bp.get("/metrics")
def metrics():
    """Prometheus text exposition."""
    services = get_services()
    rejections.tally().flush(services.db)  # this process's latest rejections are in the figures
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(services))
    return Response(generate_latest(registry), mimetype="text/plain; version=0.0.4; charset=utf-8")

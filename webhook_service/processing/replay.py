"""Replaying events: from RQ's failed registry and, once that has expired, from the event log.

The event log is the source of truth: an event is replayable when the log says it failed (or,
with `force`, whatever its status). Replay resets the event to `retrying`, drops its finished
job from RQ's failed registry (a requeued RQ job keeps zero retries left; a fresh one gets the
full backoff schedule) and enqueues a new per-event job. Handlers are idempotent merges, so
replaying an event that was already processed changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from rq.job import Job
from rq.registry import FailedJobRegistry

from webhook_service.core.models import EventStatus, StripeEvent, utcnow
from webhook_service.processing.db import Database
from webhook_service.processing.queue import EventQueue

#: Statuses a plain replay acts on; `force` adds processed ones (to re-run after a handler fix).
REPLAYABLE = (EventStatus.FAILED.value, EventStatus.RETRYING.value)


@dataclass
class ReplayPlan:
    """What a replay will do (or did), for the CLI to print."""

    replay: list[StripeEvent] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (event id, why)
    enqueued: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)


def plan_replay(
    db: Database,
    queue: EventQueue,
    event_ids: Sequence[str] = (),
    *,
    failed: bool = False,
    event_type: str | None = None,
    since: datetime | None = None,
    force: bool = False,
) -> ReplayPlan:
    """Select the events to replay: the named ones, or every failed one (optionally filtered)."""
    plan = ReplayPlan()
    with db.sessions() as session:
        if event_ids:
            rows = {
                row.id: row
                for row in session.scalars(sa.select(StripeEvent).where(StripeEvent.id.in_(event_ids)))
            }
            for event_id in dict.fromkeys(event_ids):
                row = rows.get(event_id)
                if row is None:
                    plan.skipped.append((event_id, "not in the event log"))
                elif row.status in REPLAYABLE or (force and row.status == EventStatus.PROCESSED.value):
                    plan.replay.append(row)
                elif row.status == EventStatus.IGNORED.value:
                    plan.skipped.append((event_id, f"ignored ({row.ignored_reason})"))
                else:
                    plan.skipped.append((event_id, f"already {row.status}; use --force to run it again"))
        if failed:
            # The log's failed events, plus events whose job sits in RQ's failed registry while the
            # log still expects a retry (e.g. Redis lost the scheduled retry, or `rq requeue` ran).
            registry_ids = FailedJobRegistry(queue=queue.queue).get_job_ids()
            condition = StripeEvent.status == EventStatus.FAILED.value
            if registry_ids:
                condition = condition | (
                    (StripeEvent.status == EventStatus.RETRYING.value) & StripeEvent.id.in_(registry_ids)
                )
            stmt = sa.select(StripeEvent).where(condition)
            if event_type:
                stmt = stmt.where(StripeEvent.type == event_type)
            if since:
                stmt = stmt.where(StripeEvent.received_at >= since)
            known = {row.id for row in plan.replay}
            for row in session.scalars(stmt.order_by(StripeEvent.received_at)):
                if row.id not in known:
                    plan.replay.append(row)
    return plan


def execute_replay(db: Database, queue: EventQueue, plan: ReplayPlan) -> ReplayPlan:
    """Reset the planned events and enqueue a fresh per-event job for each."""
    ids = [row.id for row in plan.replay]
    if not ids:
        return plan
    with db.sessions() as session, session.begin():
        session.execute(
            sa.update(StripeEvent)
            .where(StripeEvent.id.in_(ids))
            # A replay is a fresh episode: the retry policy's whole schedule again.
            .values(status=EventStatus.RETRYING.value, next_attempt_at=utcnow(), retries_left=None)
        )
    registry = FailedJobRegistry(queue=queue.queue)
    for event_id in ids:
        try:
            job = Job.fetch(event_id, connection=queue.connection)
            registry.remove(job, delete_job=True)
        except Exception:  # noqa: BLE001 - no job (expired, or never failed in RQ): nothing to remove
            pass
        try:
            if queue.enqueue_event(event_id):
                plan.enqueued.append(event_id)
            else:
                plan.skipped.append((event_id, "a job for it is already pending"))
        except Exception as exc:  # noqa: BLE001 - reported per event; the log keeps it `retrying` for recovery
            plan.errors.append((event_id, f"{type(exc).__name__}: {exc}"))
    return plan


def execute_replay_inline(db: Database, plan: ReplayPlan) -> ReplayPlan:
    """Dev mode (no Redis): there is no queue another process can reach, so process here and now."""
    from webhook_service.processing import attempts

    for row in plan.replay:
        with db.sessions() as session, session.begin():
            session.execute(
                sa.update(StripeEvent)
                .where(StripeEvent.id == row.id)
                .values(status=EventStatus.RETRYING.value, retries_left=None)
            )
        started = time.perf_counter()
        try:
            attempts.process_one(db, row.id)
            plan.enqueued.append(row.id)
        except Exception as exc:  # noqa: BLE001 - recorded in the log and reported
            # No queue another process reads: nothing would run a retry, so the failure is final.
            attempts.record_attempt_failure(db, row.id, exc, None, started)
            plan.errors.append((row.id, f"{type(exc).__name__}: {exc}"))
    return plan

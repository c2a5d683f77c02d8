"""Replaying events at drain speed: mark them queued again and let the batch drains take them.

The event log is the source of truth: an event is replayable when the log says it failed or is
retrying (with `force`, also when it was processed, to re-run it after a handler fix). RQ's
failed registry adds nothing the log lacks but is cleaned up: the jobs of replayed events leave
it, so `rq info` agrees with the log. A replay is one UPDATE per few thousand events and a drain
wake-up, never a job per event, so 10,000 events replay at the rate drains process them
(bench/replay.py). Handlers are idempotent merges, so replaying a processed event changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis
import sqlalchemy as sa
from rq.job import Job
from rq.registry import FailedJobRegistry

from webhook_service.core.models import EventStatus, StripeEvent
from webhook_service.processing import audit
from webhook_service.processing.db import Database
from webhook_service.processing.event_filter import EventFilter
from webhook_service.processing.queue import EventQueue

logger = logging.getLogger(__name__)

#: Statuses a plain replay acts on.
REPLAYABLE = (EventStatus.FAILED.value, EventStatus.RETRYING.value)
#: `force` adds processed events (ignored ones have no handler to re-run; queued ones are pending).
FORCE_REPLAYABLE = REPLAYABLE + (EventStatus.PROCESSED.value,)
#: Events per UPDATE (and per IN list); keeps each statement's locks and parameters small.
CHUNK = 5000


@dataclass
class ReplayResult:
    """What a replay did (or, on a dry run, would do)."""

    queued: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (event id, why)
    dry_run: bool = False
    #: False when the drain wake-up could not reach Redis (the scheduler's recovery starts one).
    drain_requested: bool = True

    @property
    def count(self) -> int:
        return len(self.queued)

    def as_dict(self) -> dict:
        return {"queued": len(self.queued), "skipped": len(self.skipped), "dry_run": self.dry_run}


def _statuses(force: bool) -> tuple[str, ...]:
    return FORCE_REPLAYABLE if force else REPLAYABLE


def _replayable(flt: EventFilter, force: bool, stmt: sa.Select) -> sa.Select:
    allowed = _statuses(force)
    statuses = tuple(s for s in flt.statuses if s in allowed) if flt.statuses else allowed
    stmt = EventFilter(types=flt.types, since=flt.since, until=flt.until, object_id=flt.object_id).apply(stmt)
    return stmt.where(StripeEvent.status.in_(statuses or ("-",)), StripeEvent.payload_pruned_at.is_(None))


def count_replayable(db: Database, flt: EventFilter, *, force: bool = False) -> int:
    """How many events `replay_matching` would replay now (the dry-run count)."""
    with db.sessions() as session:
        stmt = _replayable(flt, force, sa.select(sa.func.count()).select_from(StripeEvent))
        return session.scalar(stmt) or 0


def failed_registry_ids(queue: EventQueue) -> list[str]:
    """Event ids whose job sits in RQ's failed registry (job id = event id; drains are skipped)."""
    try:
        ids = FailedJobRegistry(queue=queue.queue).get_job_ids()
    except redis.RedisError:
        logger.warning("RQ's failed registry is unreachable; replaying from the event log alone")
        return []
    return [job_id for job_id in ids if not job_id.startswith("drain-")]


def replay_matching(
    db: Database,
    queue: EventQueue,
    flt: EventFilter,
    *,
    actor: str,
    force: bool = False,
    dry_run: bool = False,
    include_failed_registry: bool = False,
) -> ReplayResult:
    """Replay every replayable event matching `flt`, oldest first.

    `include_failed_registry` also takes retrying events whose job RQ has put in its failed
    registry (e.g. `rq requeue` ran, or Redis lost the scheduled retry) when they match `flt`.
    """
    with db.sessions() as session:
        stmt = _replayable(flt, force, sa.select(StripeEvent.id)).order_by(
            StripeEvent.received_at, StripeEvent.id
        )
        ids = list(session.scalars(stmt))
    if include_failed_registry:
        known = set(ids)
        extra = [i for i in failed_registry_ids(queue) if i not in known]
        if extra:
            retrying = EventFilter(
                statuses=(EventStatus.RETRYING.value,),
                types=flt.types,
                since=flt.since,
                until=flt.until,
                object_id=flt.object_id,
            )
            with db.sessions() as session:
                for start in range(0, len(extra), CHUNK):
                    chunk = extra[start : start + CHUNK]
                    stmt = retrying.apply(sa.select(StripeEvent.id)).where(StripeEvent.id.in_(chunk))
                    ids += list(session.scalars(stmt))
    parameters = {"filter": flt.describe(), "force": force, "dry_run": dry_run}
    return _replay(db, queue, ids, force, dry_run, actor, parameters, ReplayResult(dry_run=dry_run))


def replay_ids(
    db: Database,
    queue: EventQueue,
    event_ids: Sequence[str],
    *,
    actor: str,
    force: bool = False,
    dry_run: bool = False,
) -> ReplayResult:
    """Replay the named events; the others are reported in `skipped` with the reason."""
    result = ReplayResult(dry_run=dry_run)
    wanted = list(dict.fromkeys(event_ids))
    allowed = _statuses(force)
    found: dict[str, StripeEvent] = {}
    with db.sessions() as session:
        for start in range(0, len(wanted), CHUNK):
            chunk = wanted[start : start + CHUNK]
            found.update(
                (row.id, row)
                for row in session.scalars(sa.select(StripeEvent).where(StripeEvent.id.in_(chunk)))
            )
    ids = []
    for event_id in wanted:
        row = found.get(event_id)
        if row is None:
            result.skipped.append((event_id, "not in the event log"))
        elif row.payload_pruned_at is not None:
            result.skipped.append((event_id, "its payload was removed by retention"))
        elif row.status == EventStatus.QUEUED.value:
            result.skipped.append((event_id, "already queued"))
        elif row.status == EventStatus.IGNORED.value:
            result.skipped.append((event_id, f"ignored ({row.ignored_reason})"))
        elif row.status not in allowed:
            hint = "; use --force to run it again" if row.status == EventStatus.PROCESSED.value else ""
            result.skipped.append((event_id, f"already {row.status}{hint}"))
        else:
            ids.append(event_id)
    parameters = {**audit.ids_parameter(wanted), "force": force, "dry_run": dry_run}
    return _replay(db, queue, ids, force, dry_run, actor, parameters, result)


def _replay(db, queue, ids, force, dry_run, actor, parameters, result: ReplayResult) -> ReplayResult:
    if dry_run:
        result.queued = list(ids)
        audit.record_action(db, actor=actor, action="replay", parameters=parameters, result=result.as_dict())
        return result
    allowed = _statuses(force)
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        with db.sessions() as session, session.begin():
            # Guarded on status: an event a drain or retry finished meanwhile is not run again.
            done = set(
                session.scalars(
                    sa.update(StripeEvent)
                    .where(
                        StripeEvent.id.in_(chunk),
                        StripeEvent.status.in_(allowed),
                        StripeEvent.payload_pruned_at.is_(None),
                    )
                    # A replay is a fresh episode: the retry policy's whole schedule again.
                    .values(status=EventStatus.QUEUED.value, next_attempt_at=None, retries_left=None)
                    .returning(StripeEvent.id)
                    .execution_options(synchronize_session=False)
                )
            )
        result.queued += [event_id for event_id in chunk if event_id in done]
        result.skipped += [
            (event_id, "its status changed meanwhile") for event_id in chunk if event_id not in done
        ]
    # One row for the whole replay, once its events are queued (a replay spans many transactions).
    audit.record_action(db, actor=actor, action="replay", parameters=parameters, result=result.as_dict())
    if result.queued:
        _forget_failed_jobs(queue, result.queued)
        try:
            queue.request_drain()
        except redis.RedisError:
            result.drain_requested = False
            logger.warning("replayed events are queued, but Redis is unreachable: recovery starts a drain")
    return result


def _forget_failed_jobs(queue: EventQueue, ids: list[str]) -> None:
    """Drop the replayed events' jobs from RQ's failed registry (a pipeline, not a call per job)."""
    try:
        registry = FailedJobRegistry(queue=queue.queue)
        in_registry = set(registry.get_job_ids()) & set(ids)
        if not in_registry:
            return
        with queue.connection.pipeline(transaction=False) as pipe:
            for event_id in in_registry:
                pipe.zrem(registry.key, event_id)
                pipe.delete(Job.key_for(event_id))
            pipe.execute()
    except redis.RedisError:
        logger.warning("could not clean RQ's failed registry; the replayed events run all the same")


def pending_of(db: Database, ids: Sequence[str]) -> dict[str, int]:
    """How many of these events stand in each status (a replay's progress)."""
    counts: dict[str, int] = {}
    with db.sessions() as session:
        for start in range(0, len(ids), CHUNK):
            chunk = list(ids[start : start + CHUNK])
            rows = session.execute(
                sa.select(StripeEvent.status, sa.func.count())
                .where(StripeEvent.id.in_(chunk))
                .group_by(StripeEvent.status)
            )
            for status, count in rows:
                counts[status] = counts.get(status, 0) + count
    return counts

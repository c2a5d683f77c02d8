"""Counters that only go up, kept in the database, written in the same transaction as the work.

Why the database and not prometheus_client's multiprocess mode: that mode sums files of the
processes of one machine, and web and worker processes run on several machines. Here a counter
moves only when the work it counts commits (an event recorded, processed, failed), so a crash,
a rollback or a retry neither loses nor doubles a count, a replay never lowers one, and any web
process's /metrics reads the same figures, whatever Redis is doing.

A counter is several rows (`shard`): each writer adds to a randomly chosen one, so concurrent
commits rarely wait for each other's row lock, and /metrics sums the shards. The table's size
depends on the number of names, labels and shards, never on the number of events.
"""

from __future__ import annotations

import bisect
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webhook_service.core.models import EventStatus, MetricCounter, RejectionMinute, StripeEvent, utcnow
from webhook_service.core.sql import dialect_insert

TABLE = MetricCounter.__tablename__
#: Rows per counter; more than a deployment's concurrent writers on one counter usually are.
SHARDS = 16

RECEIVED = "received"  #: new events recorded by the receiver or resync (duplicates not counted)
IGNORED = "ignored"  #: of those, recorded as ignored
PROCESSED = "processed"  #: successful processing runs (a replayed event counts again)
FAILED = "failed"  #: final failures: retries spent, or an event that can never be processed
RETRIED = "retried"  #: failed attempts with a retry scheduled
REJECTED = "rejected"  #: deliveries answered 4xx, by reason (label)
LATENCY_BUCKET = "latency_bucket"  #: first attempts' receipt-to-processed time, by bucket (its upper bound)
LATENCY_SUM_MS = "latency_sum_ms"  #: the sum of those times, in milliseconds
RECONCILE_REPAIRED = "reconcile_repaired"  #: objects `reconcile --repair` recorded for the drains

#: Upper bounds (seconds) of the processing-latency histogram; "+Inf" catches the rest.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
INF = "+Inf"

Key = tuple[str, str]  # (name, label)


def shard() -> int:
    """The shard a writer adds to this time."""
    return random.randrange(SHARDS)


def add(executor: Session | sa.Connection, deltas: Mapping[Key, int]) -> None:
    """Add to counters in the caller's transaction: one statement, committed with the caller's work.

    Keys go in sorted order, so two transactions that touch the same rows take their locks in the
    same order and never deadlock.
    """
    one_shard = shard()
    rows = [
        {"name": name, "label": label, "shard": one_shard, "value": value}
        for (name, label), value in sorted(deltas.items())
        if value
    ]
    if not rows:
        return
    dialect = executor.get_bind().dialect if isinstance(executor, Session) else executor.dialect
    stmt = dialect_insert(dialect.name, MetricCounter).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=["name", "label", "shard"], set_={"value": MetricCounter.value + stmt.excluded.value}
    )
    executor.execute(stmt)


def latency_label(seconds: float) -> str:
    """The histogram bucket (its upper bound) a latency falls in."""
    index = bisect.bisect_left(LATENCY_BUCKETS, seconds)
    return INF if index == len(LATENCY_BUCKETS) else _bound(LATENCY_BUCKETS[index])


def _bound(value: float) -> str:
    return f"{value:g}"


def received_deltas(rows: Iterable[Mapping]) -> dict[Key, int]:
    """Counts for newly recorded event-log rows (dicts with `type` and `status`)."""
    deltas: Counter[Key] = Counter()
    for row in rows:
        deltas[(RECEIVED, row["type"])] += 1
        if row["status"] == EventStatus.IGNORED.value:
            deltas[(IGNORED, row["type"])] += 1
    return dict(deltas)


def processed_deltas(events: Iterable[StripeEvent], now: datetime) -> dict[Key, int]:
    """Counts for events processed at `now`: by type, and the latency of first attempts.

    Only first attempts feed the latency histogram: a retry waits for its backoff and a replay
    for the operator, by design, so their age since receipt says nothing about how fast the
    service works (a replay of day-old events would otherwise put a day into the histogram).
    """
    deltas: Counter[Key] = Counter()
    for event in events:
        deltas[(PROCESSED, event.type)] += 1
        if not event.attempts and event.received_at is not None:
            waited = max((now - event.received_at).total_seconds(), 0.0)
            deltas[(LATENCY_BUCKET, latency_label(waited))] += 1
            deltas[(LATENCY_SUM_MS, "")] += round(waited * 1000)
    return dict(deltas)


def totals(session: Session) -> dict[Key, int]:
    """Every counter's value (its shards summed): a scan of the counters table only."""
    stmt = sa.select(MetricCounter.name, MetricCounter.label, sa.func.sum(MetricCounter.value)).group_by(
        MetricCounter.name, MetricCounter.label
    )
    return {(name, label): int(value) for name, label, value in session.execute(stmt)}


def histogram(values: Mapping[Key, int]) -> tuple[list[tuple[str, int]], int, float]:
    """The latency histogram from `totals`: cumulative (bound, count) pairs, the count and the sum (s)."""
    running, buckets = 0, []
    for bound in [*map(_bound, LATENCY_BUCKETS), INF]:
        running += values.get((LATENCY_BUCKET, bound), 0)
        buckets.append((bound, running))
    return buckets, running, values.get((LATENCY_SUM_MS, ""), 0) / 1000


# ---- rejected deliveries: also kept per minute, so /readyz can tell what happened just now ----

#: Per-minute rows are kept this long (the readiness window is much shorter).
MINUTES_KEPT = timedelta(hours=1)


def add_rejections(session: Session, counts: Mapping[str, int], now: datetime | None = None) -> None:
    """Count rejected deliveries by reason, cumulatively and in the current minute's row."""
    counts = {reason: n for reason, n in counts.items() if n}
    if not counts:
        return
    now = now or utcnow()
    add(session, {(REJECTED, reason): n for reason, n in counts.items()})
    minute = now.replace(second=0, microsecond=0)
    insert = dialect_insert(session.get_bind().dialect.name, RejectionMinute)
    stmt = insert.values([{"minute": minute, "reason": r, "count": n} for r, n in sorted(counts.items())])
    stmt = stmt.on_conflict_do_update(
        index_elements=["minute", "reason"], set_={"count": RejectionMinute.count + stmt.excluded.count}
    )
    session.execute(stmt)
    session.execute(sa.delete(RejectionMinute).where(RejectionMinute.minute < minute - MINUTES_KEPT))


def recent_rejections(session: Session, reason: str, window: timedelta, now: datetime | None = None) -> int:
    """Deliveries rejected for `reason` in the last `window` (whole minutes, the current one included)."""
    since = (now or utcnow()).replace(second=0, microsecond=0) - window
    stmt = sa.select(sa.func.coalesce(sa.func.sum(RejectionMinute.count), 0)).where(
        RejectionMinute.reason == reason, RejectionMinute.minute >= since
    )
    return int(session.scalar(stmt) or 0)

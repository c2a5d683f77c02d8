"""Retention on a large log: `events prune` over 1,000,000 events, vs one unbatched statement pair.

usage: python bench/prune.py [--events 1000000] [--days 90]

1. A fresh PostgreSQL database with N events received evenly over the last 140 days (80 %
   processed, 15 % ignored, 3 % failed, 2 % retrying; 1.5 KB payloads), one invoice per five
   events with its snapshot's `source_event_id` and three status-history rows naming events,
   as a mirrored invoice lifecycle leaves them. Built with SQL (generate_series), untimed.
2. A copy of it (CREATE DATABASE … TEMPLATE), for the baseline.
3. ours: `retention.prune_events(older_than_days=90)`, the scheduler's daily job (batches of
   5,000, one short transaction each); then a second run, which finds nothing left to do.
4. baseline: the same work as one UPDATE (payloads of referenced events) and one DELETE, each a
   single statement over the whole log (one long transaction holding every row lock).
Checks that no failed or retrying event and no referenced id went; prints times and ratios.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from worker import ADMIN_URL, _services, drop_database, fresh_database  # noqa: E402

SPAN_DAYS = 140

FILL = """
INSERT INTO stripe_events (id, type, api_version, livemode, object_id, created, received_at, status,
                           attempts, payload, processed_at, lock_partition)
SELECT 'evt_b' || g,
       CASE WHEN s < 15 THEN 'customer.subscription.updated' ELSE 'invoice.paid' END,
       '2026-10-28.endive', false, 'in_b' || (g / 5),
       now() - (:n - g) * (:span * interval '1 day') / :n,
       now() - (:n - g) * (:span * interval '1 day') / :n,
       CASE WHEN s < 15 THEN 'ignored' WHEN s < 18 THEN 'failed' WHEN s < 20 THEN 'retrying'
            ELSE 'processed' END,
       1, '{"pad":"' || repeat('x', 1500) || '"}', now(), g % 16
FROM (SELECT g, (g::bigint * 7919) % 100 AS s FROM generate_series(0, :n - 1) AS g) AS t
"""
INVOICES = """
INSERT INTO invoices (id, status, credit_applied, attempt_count, livemode, pre_payment_credit_notes_amount,
                      post_payment_credit_notes_amount, credited_in_full, amount_overpaid,
                      version_key, source_event_id, updated_at)
SELECT 'in_b' || i, 'paid', 0, 0, false, 0, 0, false, 0, 'v', 'evt_b' || (i * 5 + 4), now()
FROM generate_series(0, :n / 5 - 1) AS i
"""
HISTORY = """
INSERT INTO invoice_status_history (invoice_id, from_status, to_status, rank, at, event_id, observation_key,
                                    recorded_at)
SELECT 'in_b' || i, NULL, st.name, st.rank, now(), 'evt_b' || (i * 5 + st.rank), 'k', now()
FROM generate_series(0, :n / 5 - 1) AS i,
     (VALUES ('draft', 0), ('open', 1), ('paid', 3)) AS st(name, rank)
"""
BASELINE = [
    """UPDATE stripe_events e SET payload = '', payload_pruned_at = now()
       WHERE status IN ('processed', 'ignored') AND received_at < now() - :days * interval '1 day'
         AND payload_pruned_at IS NULL
         AND (EXISTS (SELECT 1 FROM invoice_status_history h WHERE h.event_id = e.id)
              OR EXISTS (SELECT 1 FROM invoices i WHERE i.id = e.object_id AND i.source_event_id = e.id))""",
    """DELETE FROM stripe_events WHERE status IN ('processed', 'ignored')
       AND received_at < now() - :days * interval '1 day' AND payload_pruned_at IS NULL""",
]


def build(n: int) -> str:
    from webhook_service.processing.db import upgrade

    url = fresh_database()
    upgrade(url)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for sql in (FILL, INVOICES, HISTORY):
            conn.execute(sa.text(sql), {"n": n, "span": SPAN_DAYS})
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("VACUUM ANALYZE"))
    engine.dispose()
    return url


def copy_of(url: str) -> str:
    source = sa.engine.make_url(url).database
    name = source + "_copy"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
    return sa.engine.make_url(url).set(database=name).render_as_string(False)


def census(url: str) -> dict:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT count(*), count(*) FILTER (WHERE status IN ('failed', 'retrying')), "
                "count(*) FILTER (WHERE payload_pruned_at IS NOT NULL), "
                "(SELECT count(*) FROM invoice_status_history h "
                " WHERE NOT EXISTS (SELECT 1 FROM stripe_events e WHERE e.id = h.event_id)), "
                "coalesce(sum(length(payload)), 0) FROM stripe_events"
            )
        ).one()
    engine.dispose()
    keys = ("events", "failed_or_retrying", "payload_dropped", "dangling_history_ids", "payload_bytes")
    return dict(zip(keys, row, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90)
    args = parser.parse_args()
    from webhook_service.processing import retention

    began = time.perf_counter()
    url = build(args.events)
    baseline_url = copy_of(url)
    before = census(url)
    print(f"built {args.events:,} events in {time.perf_counter() - began:.0f} s: {before}")
    try:
        services = _services(url)
        began = time.perf_counter()
        report = retention.prune_events(services.db, older_than_days=args.days, actor="bench")
        ours = time.perf_counter() - began
        began = time.perf_counter()
        again = retention.prune_events(services.db, older_than_days=args.days, actor="bench")
        second = time.perf_counter() - began
        services.db.engine.dispose()
        after = census(url)
        touched = report.deleted + report.kept_ids
        print(
            f"ours: {ours:.1f} s for {report.deleted:,} deleted + {report.kept_ids:,} payloads dropped "
            f"in {report.batches} batches ({touched / ours:,.0f} events/s)"
        )
        print(f"ours, second run: {second:.2f} s ({again.deleted + again.kept_ids} more)")
        print(f"after: {after}")
        ok = (
            after["failed_or_retrying"] == before["failed_or_retrying"]
            and after["dangling_history_ids"] == 0
            # The second run's cutoff is later (now moved on): what aged past it meanwhile went too.
            and after["events"] == before["events"] - report.deleted - again.deleted
        )
        engine = sa.create_engine(baseline_url)
        began = time.perf_counter()
        with engine.begin() as conn:
            for sql in BASELINE:
                conn.execute(sa.text(sql), {"days": args.days})
        bulk = time.perf_counter() - began
        engine.dispose()
        print(f"baseline (one UPDATE + one DELETE): {bulk:.1f} s; {census(baseline_url)}")
        print(f"ours / baseline time: {ours / bulk:.2f}x; checks {'OK' if ok else 'WRONG'}")
    finally:
        drop_database(url)
        drop_database(baseline_url)


if __name__ == "__main__":
    main()

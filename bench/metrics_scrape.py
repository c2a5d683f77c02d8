"""Cost of a /metrics scrape with 10 events in the log and with 10,000,000; prints the ratio.

usage: python bench/metrics_scrape.py [--large 10000000] [--scrapes 31] [--keep]

Two throwaway PostgreSQL databases are migrated to head. Both get the same backlog (3 queued,
2 retrying of which 1 overdue, 1 failed) and the same counter rows; the rest of each log
(`--small` and `--large` events in all) is processed and ignored events, loaded with
generate_series (indexes dropped for the load and rebuilt, as a restore would; then VACUUM
ANALYZE, which autovacuum does in production). Then GET /metrics runs through the real app,
alternating small and large, and the medians are compared. For reference the old scrape's
GROUP BY over the log is timed once on the large database.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bench.scratch import create_database, drop_database  # noqa: E402
from webhook_service.core.config import Config  # noqa: E402
from webhook_service.web.app import create_app  # noqa: E402
from webhook_service.web.services import get_services  # noqa: E402

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
TYPES = [f"invoice.{kind}" for kind in ("created", "finalized", "paid", "payment_succeeded", "updated")]

LOG_SQL = """
INSERT INTO stripe_events (id, type, api_version, livemode, object_id, created, received_at, status,
                           attempts, processed_at, payload, lock_partition, ignored_reason)
SELECT 'evt_bench' || g,
       (ARRAY['invoice.created', 'invoice.finalized', 'invoice.paid', 'invoice.payment_succeeded',
              'invoice.updated', 'charge.succeeded'])[1 + g % 6],
       '2026-10-28.endive', false, 'in_bench' || (g / 5),
       now() - (:n - g) * interval '1 millisecond', now() - (:n - g) * interval '1 millisecond',
       CASE WHEN g % 6 = 5 THEN 'ignored' ELSE 'processed' END, 1,
       now() - (:n - g) * interval '1 millisecond', '{"object": "event"}', (g % 16)::smallint,
       CASE WHEN g % 6 = 5 THEN 'unhandled type' END
FROM generate_series(1, :n) AS g
"""

BACKLOG_SQL = """
INSERT INTO stripe_events (id, type, livemode, received_at, status, attempts, next_attempt_at, payload)
VALUES
  ('evt_q1', 'invoice.paid', false, now() - interval '3 seconds', 'queued', 0, NULL, '{}'),
  ('evt_q2', 'invoice.paid', false, now() - interval '2 seconds', 'queued', 0, NULL, '{}'),
  ('evt_q3', 'invoice.paid', false, now() - interval '1 second', 'queued', 0, NULL, '{}'),
  ('evt_r1', 'invoice.paid', false, now() - interval '1 hour', 'retrying', 2, now() - interval '5 min', '{}'),
  ('evt_r2', 'invoice.paid', false, now() - interval '1 min', 'retrying', 1, now() + interval '5 min', '{}'),
  ('evt_f1', 'invoice.voided', false, now() - interval '2 hours', 'failed', 6, NULL, '{}')
"""

BACKLOG_EVENTS = BACKLOG_SQL.count("('evt_")

COUNTERS_SQL = """
INSERT INTO metric_counters (name, label, shard, value)
SELECT name, label, shard, 1000 + shard
FROM unnest(ARRAY['received', 'processed', 'failed', 'retried', 'ignored']) AS name,
     unnest(ARRAY['invoice.created', 'invoice.finalized', 'invoice.paid', 'invoice.payment_succeeded',
                  'invoice.updated', 'invoice.voided', 'charge.succeeded']) AS label,
     generate_series(0, 15) AS shard
"""

OLD_SCRAPE_SQL = "SELECT type, status, count(*) FROM stripe_events GROUP BY type, status"


def load(url: str, n: int) -> float:
    started = time.perf_counter()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(BACKLOG_SQL))
        conn.execute(sa.text(COUNTERS_SQL))
        if n > 100_000:  # a bulk load: build the indexes once, at the end
            indexes = conn.execute(
                sa.text(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'stripe_events' "
                    "AND indexname <> 'pk_stripe_events'"
                )
            ).all()
            for name, _ in indexes:
                conn.execute(sa.text(f'DROP INDEX "{name}"'))
            conn.execute(sa.text("SET LOCAL maintenance_work_mem = '512MB'"))
            conn.execute(sa.text(LOG_SQL), {"n": n})
            for _, definition in indexes:
                conn.execute(sa.text(definition))
        elif n:
            conn.execute(sa.text(LOG_SQL), {"n": n})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE stripe_events"))
        conn.execute(sa.text("VACUUM ANALYZE metric_counters"))
    engine.dispose()
    return time.perf_counter() - started


def scrape_ms(client) -> float:
    started = time.perf_counter()
    response = client.get("/metrics")
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, response.status_code
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10, help="events in the small log (at least 6)")
    parser.add_argument("--large", type=int, default=10_000_000, help="events in the large log")
    parser.add_argument("--scrapes", type=int, default=31, help="timed scrapes per database")
    parser.add_argument("--keep", action="store_true", help="keep the databases (names are printed)")
    args = parser.parse_args()
    tag = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
    urls: dict[str, str] = {}
    apps = {}
    try:
        for size in ("small", "large"):
            url = urls[size] = create_database(f"scrape_{size}")
            seconds = load(url, (args.small if size == "small" else args.large) - BACKLOG_EVENTS)
            with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
                rows = conn.execute("SELECT count(*) FROM stripe_events").fetchone()[0]
            print(f"{size}: {rows:,} events in the log (loaded in {seconds:.0f} s)")
            config = Config(
                webhook_secrets=("whsec_bench_scrape_0123456789",),
                database_url=url,
                database_url_is_default=False,
                redis_url=REDIS_URL,
                queue_name=f"bench-scrape-{tag}",
                log_level="WARNING",
            )
            apps[size] = create_app(config)
        clients = {size: app.test_client() for size, app in apps.items()}
        for client in clients.values():  # warm pools, caches and prepared plans
            for _ in range(5):
                scrape_ms(client)
        times: dict[str, list[float]] = {"small": [], "large": []}
        for _ in range(args.scrapes):
            for size, client in clients.items():
                times[size].append(scrape_ms(client))
        medians = {size: statistics.median(values) for size, values in times.items()}
        for size, values in times.items():
            print(
                f"{size}: median {medians[size]:.2f} ms per scrape "
                f"(min {min(values):.2f}, max {max(values):.2f}, {len(values)} scrapes)"
            )
        print(f"ratio large/small: {medians['large'] / medians['small']:.2f}")
        engine = get_services(apps["large"]).db.engine
        with engine.connect() as conn:
            started = time.perf_counter()
            conn.execute(
                sa.text("SELECT type, status, count(*) FROM stripe_events GROUP BY type, status")
            ).all()
            old = (time.perf_counter() - started) * 1000
        print(f"for reference, the old scrape's GROUP BY over the large log: {old:.0f} ms")
    finally:
        for app in apps.values():
            get_services(app).db.engine.dispose()
        if args.keep:
            print("kept:", ", ".join(sa.engine.make_url(url).database or "" for url in urls.values()))
        else:
            for url in urls.values():
                drop_database(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())

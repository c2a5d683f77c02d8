"""Cost per event with 1,000 and with 1,000,000 invoices already mirrored; prints the ratio.

usage: python bench/growth.py [--large 1000000] [--rounds 2]

Two databases are seeded with SQL (customers, invoices with a status-history row each, and a
processed event-log row per invoice), then, alternating small and large, the same number of
fresh invoice lifecycles is recorded and drained with the worker's code. The ratio of the
per-event drain times (large / small, median over rounds) shows whether cost grows with the data.
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
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "fixtures")]

import json  # noqa: E402

import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from builder import NEW_API, Customer, Ids, InvoiceLifecycle, Line  # noqa: E402

ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://root@127.0.0.1:5432/test")

SEED_SQL = """
INSERT INTO customers (id, name, email, currency, livemode, version_key, credit_balance,
                       entity_type, created_at, updated_at)
SELECT 'cus_seed' || g, 'Seed ' || g, 'seed' || g || '@example.com', 'usd', false, '1', 0,
       'organization', now(), now()
FROM generate_series(1, GREATEST(:n / 20, 1)) AS g;

INSERT INTO invoices (id, number, customer_id, status, stripe_status, currency, subtotal, tax, total,
                      amount_due, amount_paid, amount_remaining, credit_applied, attempt_count,
                      created_at, issued_at, paid_at, livemode, lines_complete, version_key, updated_at,
                      pre_payment_credit_notes_amount, post_payment_credit_notes_amount, amount_overpaid,
                      credited_in_full)
SELECT 'in_seed' || g, 'S-' || lpad(g::text, 8, '0'), 'cus_seed' || (1 + g % GREATEST(:n / 20, 1)),
       'paid', 'paid', 'usd', 4900, 0, 4900, 4900, 4900, 0, 0, 1,
       to_timestamp(1700000000 + g), to_timestamp(1700000000 + g), to_timestamp(1700003600 + g),
       false, true, '04.' || g, now(), 0, 0, 0, false
FROM generate_series(1, :n) AS g;

INSERT INTO invoice_status_history (invoice_id, from_status, to_status, rank, at, event_id,
                                    observation_key, recorded_at)
SELECT 'in_seed' || g, 'open', 'paid', 4, to_timestamp(1700003600 + g), 'evt_seed' || g, '0', now()
FROM generate_series(1, :n) AS g;

INSERT INTO stripe_events (id, type, api_version, livemode, object_id, created, received_at, status,
                           attempts, payload)
SELECT 'evt_seed' || g, 'invoice.paid', '2026-10-28.endive', false, 'in_seed' || g,
       to_timestamp(1700003600 + g), now(), 'processed', 1, '{}'
FROM generate_series(1, :n) AS g;
"""


def seeded_database(size: int) -> str:
    from webhook_service.processing.db import upgrade

    name = f"whs_bench_growth_{size}_{os.getpid()}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(ADMIN_URL).set(drivername="postgresql+psycopg", database=name)
    url = url.render_as_string(hide_password=False)
    upgrade(url)
    engine = sa.create_engine(url)
    started = time.perf_counter()
    with engine.begin() as conn:
        for statement in SEED_SQL.split(";\n"):
            if statement.strip():
                conn.execute(sa.text(statement), {"n": size})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
    engine.dispose()
    print(f"seeded {size:,} invoices in {time.perf_counter() - started:.1f}s")
    return url


def lifecycle_bodies(invoices: int) -> list[bytes]:
    ids = Ids(uuid.uuid4().hex)
    customer = Customer(ids.make("cus"), "Growth Co", "g@example.com")
    bodies = []
    for i in range(invoices):
        lines = [Line(ids.make("il"), "Plan", 4900, price_id="price_1G", product_id="prod_1G")]
        life = InvoiceLifecycle(
            ids, customer, NEW_API, 1_790_000_000 + i, lines, number=f"G-{uuid.uuid4().hex[:10]}"
        )
        life.created(1_790_000_000 + i)
        life.finalized(1_790_003_600 + i)
        life.paid(1_790_007_200 + i)
        bodies += [json.dumps(e, separators=(",", ":")).encode() for e in life.events]
    return bodies


def drain_cost(url: str, invoices: int) -> float:
    """Seconds per event to drain freshly recorded lifecycles."""
    from webhook_service.core.config import Config
    from webhook_service.processing import drain, eventlog
    from webhook_service.processing.envelope import parse_envelope
    from webhook_service.web.app import create_app
    from webhook_service.web.services import get_services

    config = Config(
        webhook_secrets=("whsec_bench_00000000",), database_url=url, database_url_is_default=False,
        redis_url=None, log_level="WARNING",
    )  # fmt: skip
    services = get_services(create_app(config))
    bodies = lifecycle_bodies(invoices)
    for body in bodies:
        eventlog.record_event(services.db.engine, parse_envelope(body), body)
    started = time.perf_counter()
    drain.drain(services.db, services.queue, services.config.drain_batch_size)
    elapsed = time.perf_counter() - started
    services.db.engine.dispose()
    return elapsed / len(bodies)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument(
        "--invoices", type=int, default=1_000, help="fresh lifecycles drained per measurement"
    )
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    urls = {"small": seeded_database(args.small), "large": seeded_database(args.large)}
    costs: dict[str, list[float]] = {"small": [], "large": []}
    try:
        for _ in range(args.rounds):
            for size in ("small", "large"):
                costs[size].append(drain_cost(urls[size], args.invoices))
                print(f"{size}: {costs[size][-1] * 1e6:,.0f} µs/event", flush=True)
        ratio = statistics.median(costs["large"]) / statistics.median(costs["small"])
        print(f"cost per event with {args.large:,} vs {args.small:,} invoices: {ratio:.2f}x (target ≤ 1.2)")
    finally:
        for url in urls.values():
            name = sa.engine.make_url(url).database
            with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()

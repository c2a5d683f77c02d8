"""Console list pages with 1,000,000 invoices and 10,000,000 events: median milliseconds per page.

usage: python bench/console.py [--invoices 1000000] [--events 10000000] [--runs 15] [--keep]

A throwaway PostgreSQL database is migrated and loaded with generate_series (indexes dropped
during the load and rebuilt after, then ANALYZE); with --keep it is left for the next run, which
reuses it when it holds the requested row counts. Each page is requested through the app (login,
routing, queries, Jinja) with Flask's test client, `--runs` times after one warm-up; the median
is printed with its ratio to the 200 ms target, and beside it, as the same-run baseline, the read
API's equivalent list (COUNT(*) and OFFSET paging) for the pages that have one.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from webhook_service.core.config import Config, OperatorKey  # noqa: E402
from webhook_service.processing.db import upgrade  # noqa: E402
from webhook_service.web.app import create_app  # noqa: E402

ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://root@127.0.0.1:5432/test")
DB_NAME = "whs_bench_console"
TARGET_MS = 200.0
KEY = "bench-operator-key-0123456789"
PORTAL_KEY = "bench-portal-key-0123456789"
TABLES = ("customers", "invoices", "stripe_events")

#: 1 customer per 100 invoices, 1 billable entity per 10 customers.
LOAD_SQL = """
INSERT INTO customers (id, name, email, currency, livemode, version_key, credit_balance, entity_type,
                       entity_id, created_at, updated_at)
SELECT 'cus_b' || g, 'Customer ' || g, 'billing' || g || '@example.com', 'usd', false, '1', 0,
       'organization', 'org_' || (g % GREATEST(:invoices / 1000, 1)), now(), now()
FROM generate_series(0, GREATEST(:invoices / 100, 1) - 1) AS g;

-- Statuses: 1 in 1,000 void, 1 in 500 past due, 1 in 100 open, the rest paid.
INSERT INTO invoices (id, number, customer_id, status, stripe_status, currency, subtotal, tax, total,
                      amount_due, amount_paid, amount_remaining, credit_applied, attempt_count,
                      created_at, issued_at, due_date, paid_at, livemode, lines_complete, version_key,
                      updated_at, pre_payment_credit_notes_amount, post_payment_credit_notes_amount,
                      amount_overpaid, credited_in_full)
SELECT 'in_b' || g, 'INV-' || lpad(g::text, 8, '0'), 'cus_b' || (g % GREATEST(:invoices / 100, 1)),
       s.status, s.status, 'usd', 4900, 0, 4900, 4900, 0, 4900, 0, 1,
       to_timestamp(1700000000 + g * 60), to_timestamp(1700000000 + g * 60),
       to_timestamp(1700000000 + g * 60 + 30 * 86400), NULL, false, true, '04.' || g, now(), 0, 0, 0, false
FROM generate_series(0, :invoices - 1) AS g,
     LATERAL (SELECT CASE WHEN g % 1000 = 7 THEN 'void' WHEN g % 500 = 3 THEN 'past_due'
                          WHEN g % 100 = 1 THEN 'open' ELSE 'paid' END AS status) AS s;

-- 16 types; statuses: 1 in 10,000 failed, 1 in 5,000 retrying, 1 in 50 ignored, the rest processed,
-- three events a second, newest now.
INSERT INTO stripe_events (id, type, api_version, livemode, object_id, created, received_at, status,
                           attempts, last_error, next_attempt_at, processed_at, payload, lock_partition)
SELECT 'evt_b' || lpad(g::text, 9, '0'),
       (ARRAY['invoice.created','invoice.finalized','invoice.paid','invoice.payment_succeeded',
              'invoice.updated','invoice.payment_failed','invoice.voided','invoice.overdue',
              'invoice.marked_uncollectible','customer.created','customer.updated',
              'credit_note.created','credit_note.updated','credit_note.voided',
              'customer.subscription.updated','invoice.upcoming'])[1 + g % 16],
       '2026-10-28.endive', false, 'in_b' || (g % :invoices),
       now() - make_interval(secs => (:events - g) / 3.0),
       now() - make_interval(secs => (:events - g) / 3.0), s.status,
       1, CASE WHEN s.status IN ('failed', 'retrying') THEN 'RuntimeError: bench failure' END,
       CASE WHEN s.status = 'retrying' THEN now() + interval '10 minutes' END,
       CASE WHEN s.status = 'processed' THEN now() END,
       '{"object":"event"}', (g % 16)::smallint
FROM generate_series(0, :events - 1) AS g,
     LATERAL (SELECT CASE WHEN g % 10000 = 17 THEN 'failed' WHEN g % 5000 = 11 THEN 'retrying'
                          WHEN g % 50 = 5 THEN 'ignored' ELSE 'processed' END AS status) AS s;
"""


def _bench_url() -> str:
    base = sa.engine.make_url(ADMIN_URL)
    return base.set(drivername="postgresql+psycopg", database=DB_NAME).render_as_string(hide_password=False)


def _loaded(url: str, invoices: int, events: int) -> bool:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            got = conn.execute(
                sa.text("SELECT (SELECT count(*) FROM invoices), (SELECT count(*) FROM stripe_events)")
            ).one()
        return tuple(got) == (invoices, events)
    except sa.exc.SQLAlchemyError:
        return False
    finally:
        engine.dispose()


def load(url: str, invoices: int, events: int) -> None:
    """A fresh database at head, filled; indexes rebuilt after the load (far faster than during it)."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    upgrade(url)
    engine = sa.create_engine(url)
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL maintenance_work_mem = '512MB'; SET LOCAL synchronous_commit = off"))
        indexes = conn.execute(
            sa.text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY(:tables) "
                "AND indexname NOT IN (SELECT conname FROM pg_constraint)"
            ),
            {"tables": list(TABLES)},
        ).all()
        for name, _definition in indexes:
            conn.execute(sa.text(f'DROP INDEX "{name}"'))
        for statement in filter(str.strip, LOAD_SQL.split(";\n")):
            conn.execute(sa.text(statement), {"invoices": invoices, "events": events})
            table = re.search(r"INSERT INTO (\w+)", statement)
            print(f"  {table[1] if table else '?'} loaded at {time.perf_counter() - started:.0f} s")
        for _name, definition in indexes:
            conn.execute(sa.text(definition))
        print(f"  indexes rebuilt in {time.perf_counter() - started:.0f} s")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
    engine.dispose()
    print(f"  loaded and analysed in {time.perf_counter() - started:.0f} s")


def _logged_in(app):
    client = app.test_client()
    page = client.get("/console/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)[1]
    assert client.post("/console/login", data={"key": KEY, "csrf_token": token}).status_code == 302
    return client


def _median_ms(fetch, runs: int) -> float:
    fetch()  # warm-up: plan caches, the first render of the template
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fetch()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _cursor_of(client, path: str) -> str:
    """The `after` link of a page, to time a page further down the list."""
    page = client.get(path).get_data(as_text=True)
    more = re.search(r'rel="next" href="([^"]+)"', page)
    return more[1].replace("&amp;", "&") if more else path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--keep", action="store_true", help="leave the database for the next run")
    args = parser.parse_args()
    url = _bench_url()
    if _loaded(url, args.invoices, args.events):
        print(f"reusing {DB_NAME} ({args.invoices:,} invoices, {args.events:,} events)")
        upgrade(url)  # migrations added since it was loaded (columns without defaults: instant)
    else:
        print(f"loading {DB_NAME}: {args.invoices:,} invoices, {args.events:,} events")
        load(url, args.invoices, args.events)
    config = Config(
        database_url=url,
        database_url_is_default=False,
        operator_keys=(OperatorKey("bench", KEY),),
        portal_api_keys=(PORTAL_KEY,),
        log_level="WARNING",
    )
    app = create_app(config)
    client = _logged_in(app)
    api = {"Authorization": f"Bearer {PORTAL_KEY}"}
    old_object = f"in_b{args.invoices // 3}"
    pages = [
        ("events: newest", "/console/events", "/api/v1/events"),
        ("events: failed + retrying", "/console/events?status=failed&status=retrying", None),
        ("events: failed", "/console/events?status=failed", "/api/v1/events?status=failed"),
        ("events: type", "/console/events?type=invoice.paid", "/api/v1/events?type=invoice.paid"),
        ("events: type + status", "/console/events?type=invoice.voided&status=processed", None),
        ("events: 3 types", "/console/events?type=invoice.paid,invoice.voided,customer.updated", None),
        ("events: since 3d", "/console/events?since=3d", None),
        ("events: object id", f"/console/events?object={old_object}", None),
        ("events: page 2", _cursor_of(client, "/console/events"), "/api/v1/events?page=2"),
        ("events: page 2 of failed", _cursor_of(client, "/console/events?status=failed"), None),
        ("invoices: newest", "/console/invoices", "/api/v1/invoices"),
        ("invoices: paid", "/console/invoices?status=paid", "/api/v1/invoices?status=paid"),
        ("invoices: void (1 in 1,000)", "/console/invoices?status=void", "/api/v1/invoices?status=void"),
        ("invoices: entity", "/console/invoices?entity=org_42", "/api/v1/invoices?entity=org_42"),
        ("invoices: entity + status", "/console/invoices?entity=org_42&status=open", None),
        ("invoices: number prefix", "/console/invoices?q=INV-0004", "/api/v1/invoices?q=INV-0004"),
        (
            "invoices: issued in a month",
            "/console/invoices?issued_from=2024-01-01&issued_to=2024-02-01",
            "/api/v1/invoices?issued_from=2024-01-01T00:00:00Z&issued_to=2024-02-01T00:00:00Z",
        ),
        ("invoices: page 2", _cursor_of(client, "/console/invoices"), "/api/v1/invoices?page=2"),
        ("invoices: past due", "/console/invoices/past-due", "/api/v1/invoices?status=past_due"),
    ]
    print(f"\nmedian of {args.runs} requests (ms); target {TARGET_MS:.0f} ms; baseline: the read API's list")
    print(f"{'page':32} {'console':>9} {'/target':>8} {'API':>9} {'console/API':>12}")
    worst = 0.0
    for name, path, api_path in pages:
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        ms = _median_ms(lambda p=path: client.get(p), args.runs)
        worst = max(worst, ms)
        baseline = ""
        if api_path:
            api_ms = _median_ms(lambda p=api_path: client.get(p, headers=api), max(3, args.runs // 5))
            baseline = f"{api_ms:9.1f} {ms / api_ms:12.3f}"
        print(f"{name:32} {ms:9.1f} {ms / TARGET_MS:8.2f} {baseline}")
    print(f"\nslowest console page: {worst:.1f} ms ({worst / TARGET_MS:.2f} of the target)")
    app.extensions["webhook_service"].db.engine.dispose()
    if not args.keep:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    return 0 if worst < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())

"""What counting received events costs the receiver: its INSERT with and without the counters CTE.

usage: python bench/receiver_counters.py [--rows 1] [--statements 300] [--rounds 6]

The receiver records a group of deliveries with one autocommit statement (processing/eventlog.py);
since the counters live in the database, that statement also adds to `metric_counters`. Here the
same statement runs with and without that part, alternating rounds on a throwaway database, on the
raw psycopg connection as the receiver does; prints the median time per statement and the ratio.
`--rows` is the group size (1 = a delivery that arrives alone, the worst case).
"""

from __future__ import annotations

import argparse
import json
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

from webhook_service.core.models import utcnow  # noqa: E402
from webhook_service.processing import counters, eventlog  # noqa: E402
from webhook_service.processing.db import create_database, upgrade  # noqa: E402
from webhook_service.processing.envelope import parse_envelope  # noqa: E402

ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://root@127.0.0.1:5432/test")
FIXTURE = sorted((HERE.parent / "fixtures" / "events").rglob("*.json"))[0]
WITH_COUNTERS = eventlog._PG_RECORD_SQL
#: The same INSERT without the counters: the statement before counters lived in the database.
_INSERT_END = WITH_COUNTERS.index("RETURNING id, type, status)")
WITHOUT = WITH_COUNTERS[len("WITH new AS (") : _INSERT_END] + "RETURNING id"


def statement_ms(db, sql: str, rows: int, statements: int) -> float:
    template = json.loads(FIXTURE.read_text())
    times = []
    for _ in range(statements):
        batch = []
        for _ in range(rows):
            event = dict(template, id=f"evt_bench_{uuid.uuid4().hex}")
            body = json.dumps(event).encode()
            batch.append(eventlog._row(parse_envelope(body), body, utcnow()))
        params: list = [[row[name] for row in batch] for name in eventlog._RECORD_COLUMNS]
        if sql is WITH_COUNTERS:
            params.append(counters.shard())
        pooled = db.engine.raw_connection()
        conn = pooled.driver_connection
        conn.autocommit = True
        started = time.perf_counter()
        list(conn.execute(sql, params))
        times.append(time.perf_counter() - started)
        conn.autocommit = False
        pooled.close()
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1, help="deliveries per statement (a group commit)")
    parser.add_argument("--statements", type=int, default=300, help="statements per round")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of each, alternating")
    args = parser.parse_args()
    name = f"whs_bench_counters_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(ADMIN_URL).set(drivername="postgresql+psycopg", database=name)
    rendered = url.render_as_string(hide_password=False)
    db = None
    try:
        upgrade(rendered)
        db = create_database(rendered)
        results: dict[str, list[float]] = {"without": [], "with": []}
        for _ in range(args.rounds):
            results["without"].append(statement_ms(db, WITHOUT, args.rows, args.statements))
            results["with"].append(statement_ms(db, WITH_COUNTERS, args.rows, args.statements))
        without, with_ = (statistics.median(results[k]) for k in ("without", "with"))
        print(f"{args.rows} row(s) per statement, {args.rounds} x {args.statements} statements each")
        print(f"INSERT alone: {without:.3f} ms; with the counters: {with_:.3f} ms")
        print(f"ratio with / without: {with_ / without:.2f}")
    finally:
        if db is not None:
            db.engine.dispose()
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Worker throughput: a pre-filled backlog mirrored into PostgreSQL by 1 and 2 processes, vs the peer.

usage: python bench/worker.py [--invoices 2000] [--repeat 3] [--skip-peer]

1. Writes a backlog of realistic invoice lifecycles as JSON lines (created, finalized, a tenth
   with payment_failed, paid, payment_succeeded) to bench/out/events.jsonl.
2. For 1 and then 2 processes: a fresh database, the backlog recorded in the event log
   (untimed: that is the receiver's work), then the processes drain it with the worker's own code
   (`drain.drain`, what the RQ drain job runs); timed from start to the last commit.
3. Runs ../shared/peer-sync-engine/run.sh on the same JSON lines (the peer mirrors into the same
   PostgreSQL server) and prints our rate over the peer's sequential rate.
4. Checks every invoice ended paid with its full status history.
Prints ratios measured in this run; absolute numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(REPO / "fixtures")]

import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from builder import NEW_API, Customer, Ids, InvoiceLifecycle, Line  # noqa: E402

ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://root@127.0.0.1:5432/test")
PEER = REPO.parent / "shared" / "peer-sync-engine" / "run.sh"
T0 = 1_790_000_000


def write_backlog(path: Path, invoices: int) -> int:
    """The JSON lines backlog; returns the number of events."""
    ids = Ids("bench-worker")
    customers = [
        Customer(ids.make("cus"), f"Customer {i}", f"c{i}@example.com") for i in range(max(invoices // 20, 1))
    ]
    count = 0
    with path.open("w") as out:
        for i in range(invoices):
            lines = [
                Line(ids.make("il"), "Plan", 4900 + i % 7 * 100, price_id="price_1B", product_id="prod_1B")
            ]
            customer = customers[i % len(customers)]
            life = InvoiceLifecycle(
                ids, customer, NEW_API, T0 + i, lines, number=f"B-{i:07d}", subscription=f"sub_bench{i % 97}"
            )
            life.created(T0 + i)
            life.finalized(T0 + i + 3600)
            if i % 10 == 0:
                life.payment_failed(T0 + i + 3600 + 5)
            life.paid(T0 + i + 7200)
            for event in life.events:
                out.write(json.dumps(event, separators=(",", ":")) + "\n")
                count += 1
    return count


def fresh_database() -> str:
    name = f"whs_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return (
        sa.engine.make_url(ADMIN_URL)
        .set(drivername="postgresql+psycopg", database=name)
        .render_as_string(False)
    )


def drop_database(url: str) -> None:
    name = sa.engine.make_url(url).database
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _services(url: str):
    from webhook_service.core.config import Config
    from webhook_service.web.app import create_app
    from webhook_service.web.services import get_services

    app = create_app(Config(webhook_secrets=("whsec_bench_00000000",), database_url=url,
                            database_url_is_default=False, redis_url=None, log_level="WARNING"))  # fmt: skip
    return get_services(app)


def _drain_worker(url: str, start, done) -> None:
    services = _services(url)
    start.wait()
    from webhook_service.processing import drain

    drain.drain(services.db, services.queue, services.config.drain_batch_size)
    done.put(time.perf_counter())


def run_ours(backlog: Path, processes: int) -> tuple[float, str]:
    """Events per second for `processes` draining the backlog; returns (rate, database url)."""
    from webhook_service.processing import eventlog
    from webhook_service.processing.db import upgrade
    from webhook_service.processing.envelope import parse_envelope

    url = fresh_database()
    upgrade(url)
    services = _services(url)
    bodies = backlog.read_bytes().splitlines()
    for body in bodies:
        eventlog.record_event(services.db.engine, parse_envelope(body), body)
    services.db.engine.dispose()
    ctx = multiprocessing.get_context("fork")
    start, done = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_drain_worker, args=(url, start, done)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    time.sleep(1.0)  # let every process connect before the clock starts
    began = time.perf_counter()
    start.set()
    finished = max(done.get(timeout=600) for _ in workers)
    for worker in workers:
        worker.join()
    return len(bodies) / (finished - began), url


def check_states(url: str, invoices: int) -> str:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        statuses = dict(conn.execute(sa.text("SELECT status, count(*) FROM invoices GROUP BY status")).all())
        pending = conn.execute(
            sa.text("SELECT count(*) FROM stripe_events WHERE status <> 'processed'")
        ).scalar()
        history = conn.execute(sa.text("SELECT count(*) FROM invoice_status_history")).scalar()
    engine.dispose()
    expected_history = invoices * 3 + (invoices + 9) // 10  # draft, open, paid (+ past_due on a failure)
    ok = statuses == {"paid": invoices} and pending == 0 and history == expected_history
    return f"{'OK' if ok else 'WRONG'}: statuses {statuses}, unprocessed {pending}, history rows {history}"


def run_peer(backlog: Path) -> float | None:
    if not PEER.exists():
        print(f"peer: {PEER} not found")
        return None
    result = subprocess.run(["bash", str(PEER), str(backlog)], capture_output=True, text=True, timeout=1800)
    print("peer output:\n  " + "\n  ".join(result.stdout.strip().splitlines()[-8:]))
    match = re.search(r"sequential events/s:\s*([\d.]+)", result.stdout)
    return float(match.group(1)) if match else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--invoices", type=int, default=2000)
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--repeat", type=int, default=3, help="runs of 1 and 2 processes, alternating")
    args = parser.parse_args()
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    backlog = out / "events.jsonl"
    events = write_backlog(backlog, args.invoices)
    size = backlog.stat().st_size // events
    print(f"backlog: {events} events for {args.invoices} invoices ({size} bytes/event)")
    runs: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.repeat):  # alternating, so drift in the machine's speed hits both alike
        for processes in (1, 2):
            rate, url = run_ours(backlog, processes)
            runs[processes].append(rate)
            print(f"ours, {processes} process(es): {rate:,.0f} events/s; {check_states(url, args.invoices)}")
            drop_database(url)
    rates = {processes: statistics.median(values) for processes, values in runs.items()}
    print(f"median of {args.repeat}: 1 process {rates[1]:,.0f} ev/s, 2 processes {rates[2]:,.0f} ev/s")
    print(f"scaling 1 → 2 processes: {rates[2] / rates[1]:.2f}x (target ≥ 1.6)")
    if not args.skip_peer:
        peer = run_peer(backlog)
        if peer:
            print(f"ours (1 process) / peer (sequential): {rates[1] / peer:.2f}x (target ≥ 1.5)")


if __name__ == "__main__":
    main()

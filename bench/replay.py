"""Replay speed: 10,000 failed events replayed through the drains, vs draining them fresh.

usage: python bench/replay.py [--invoices 2440] [--repeat 3]   (2,440 invoices: 10,004 events)

Each round, alternating so drift in the machine's speed hits both alike:
1. drain: a fresh database, the backlog (bench/worker.py's invoice lifecycles, 4 events per
   invoice, 5 for the tenth with a failed payment) recorded in the event log untimed, then
   drained by `drain.drain` (the worker's code); timed from start to the last commit. The baseline.
2. replay: a fresh database, the same backlog recorded and every event marked `failed` (what a
   bad deploy leaves behind), then `replay.replay_matching(status=failed)` (what
   `webhook-service replay --failed` and the console call) and the same drain; timed from the
   replay call to the last commit.
Prints the medians and replay / drain (target: replay ≥ 1,000 events/s, ratio near 1).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "fixtures"), str(HERE)]

import sqlalchemy as sa  # noqa: E402
from worker import _services, check_states, drop_database, fresh_database, write_backlog  # noqa: E402


def _prepared(backlog: Path, failed: bool):
    from webhook_service.processing import eventlog
    from webhook_service.processing.db import upgrade
    from webhook_service.processing.envelope import parse_envelope

    url = fresh_database()
    upgrade(url)
    services = _services(url)
    bodies = backlog.read_bytes().splitlines()
    for start in range(0, len(bodies), 500):
        chunk = bodies[start : start + 500]
        eventlog.record_events(services.db.engine, [(parse_envelope(body), body) for body in chunk])
    if failed:
        with services.db.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE stripe_events SET status = 'failed', attempts = 6, "
                    "last_error = 'OperationalError: bad deploy' WHERE status = 'queued'"
                )
            )
    with services.db.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("VACUUM ANALYZE stripe_events"))
    return url, services, len(bodies)


def run_drain(backlog: Path) -> tuple[float, str]:
    from webhook_service.processing import drain

    url, services, count = _prepared(backlog, failed=False)
    began = time.perf_counter()
    drain.drain(services.db, services.queue, services.config.drain_batch_size)
    elapsed = time.perf_counter() - began
    services.db.engine.dispose()
    return count / elapsed, url


def run_replay(backlog: Path) -> tuple[float, str]:
    from webhook_service.processing import drain, replay
    from webhook_service.processing.event_filter import EventFilter

    url, services, count = _prepared(backlog, failed=True)
    began = time.perf_counter()
    result = replay.replay_matching(
        services.db,
        services.queue,
        EventFilter(statuses=("failed",)),
        actor="bench",
        include_failed_registry=True,
    )
    drain.drain(services.db, services.queue, services.config.drain_batch_size)
    elapsed = time.perf_counter() - began
    assert result.count == count, (result.count, count)
    services.db.engine.dispose()
    return count / elapsed, url


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--invoices", type=int, default=2440, help="4 events each, a tenth 5: 10,004")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    backlog = out / "replay-events.jsonl"
    events = write_backlog(backlog, args.invoices)
    print(f"backlog: {events} events for {args.invoices} invoices")
    drains, replays = [], []
    for _ in range(args.repeat):
        for name, run, rates in (("drain", run_drain, drains), ("replay", run_replay, replays)):
            rate, url = run(backlog)
            rates.append(rate)
            print(f"{name:>6}: {rate:,.0f} events/s; {check_states(url, args.invoices)}")
            drop_database(url)
    drain_rate, replay_rate = statistics.median(drains), statistics.median(replays)
    print(f"median of {args.repeat}: drain {drain_rate:,.0f} ev/s, replay {replay_rate:,.0f} ev/s")
    print(f"replay / drain: {replay_rate / drain_rate:.2f}x; replay ≥ 1,000 ev/s: {replay_rate >= 1000}")


if __name__ == "__main__":
    main()

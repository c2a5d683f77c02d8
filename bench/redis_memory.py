"""Redis bytes per queued event, and peak Redis memory for a backlog, vs one RQ job per event.

usage: python bench/redis_memory.py [--events 100000]

Accepts a backlog through the receiver's own calls (event-log INSERT, then the drain request)
against a private redis-server, with no worker running, and reads Redis' INFO memory. For
comparison it enqueues the same events as one RQ job each (the design this service avoids).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "fixtures")]

import json  # noqa: E402

import psycopg  # noqa: E402
import redis  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bench.receiver import event_template  # noqa: E402

ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://root@127.0.0.1:5432/test")
PORT = 18479


def memory(conn: redis.Redis) -> tuple[int, int]:
    info = conn.info("memory")
    return info["used_memory"], info["used_memory_peak"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    from webhook_service.core.config import Config
    from webhook_service.processing import eventlog
    from webhook_service.processing.db import upgrade
    from webhook_service.processing.envelope import parse_envelope
    from webhook_service.web.app import create_app
    from webhook_service.web.services import get_services

    tmp = tempfile.mkdtemp(prefix="bench-redis-")
    command = ["redis-server", "--port", str(PORT), "--save", "", "--appendonly", "no", "--dir", tmp]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    name = f"whs_bench_mem_{os.getpid()}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(ADMIN_URL).set(drivername="postgresql+psycopg", database=name)
    url = url.render_as_string(hide_password=False)
    try:
        time.sleep(0.5)
        upgrade(url)
        config = Config(
            webhook_secrets=("whsec_bench_00000000",), database_url=url, database_url_is_default=False,
            redis_url=f"redis://127.0.0.1:{PORT}/0", log_level="WARNING",
        )  # fmt: skip
        services = get_services(create_app(config))
        conn = services.queue.connection
        template = event_template()
        original = json.loads(template)["id"]
        base, _ = memory(conn)
        for _ in range(args.events):
            body = template.replace(original, f"evt_mem{uuid.uuid4().hex}", 1).encode()
            eventlog.record_event(services.db.engine, parse_envelope(body), body)
            services.queue.request_drain()
        used, peak = memory(conn)
        per_event = (used - base) / args.events
        print(
            f"ours: {args.events:,} accepted events queued; Redis used {used - base:,} bytes above baseline"
        )
        jobs = services.queue.queue.count
        print(f"  ({per_event:.2f} bytes/event), peak {peak:,} bytes, {jobs} job(s) queued")
        conn.flushdb()
        sample = min(args.events, 10_000)
        base, _ = memory(conn)
        for _ in range(sample):
            body = template.replace(original, f"evt_job{uuid.uuid4().hex}", 1)
            services.queue.queue.enqueue(
                "jobs.events.process_event", body, job_id=f"evt_job{uuid.uuid4().hex}"
            )
        used, _ = memory(conn)
        per_job = (used - base) / sample
        backlog_mib = per_job * args.events / 2**20
        print(f"one RQ job per event (payload in the job): {per_job:,.0f} bytes/event;")
        print(f"  a {args.events:,}-event backlog would hold ~{backlog_mib:,.0f} MiB")
    finally:
        server.terminate()
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()

"""What the process drills share: the service's real processes, a Stripe-like delivery stream, and
the checks every drill ends with.

A drill starts `gunicorn`, `webhook-service worker` and `webhook-service scheduler` as the
Procfile does (each in its own session, so a drill can signal one process or a whole tree), sends
a stream of signed deliveries with duplicates the way Stripe does (a non-2xx or a dropped
connection is sent again), injects its fault, and then checks what every row of the fault matrix
promises: every acknowledged event is in the event log and ends processed (acknowledged-then-lost
= 0), every invoice ends in its final status, and each past-due episode has exactly one
notification per audience. The recovery time is measured from the fault to the first delivery
acknowledged and the first event processed after it, and printed (`pytest -s`) as a `DRILL` line.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import requests
import sqlalchemy as sa
from builder import NEW_API, Customer, Ids, InvoiceLifecycle, Line

from tests.conftest import SECRET, free_port
from webhook_service.core.signature import sign

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = os.path.join(os.path.dirname(sys.executable), "webhook-service")
T0 = 1_794_000_000  # 2026-11-05T20:00:00Z, like the fixtures' newest events


def wait_for(check: Callable[[], object], timeout: float, what: str, every: float = 0.05) -> float:
    """Seconds until `check()` is true; AssertionError naming `what` after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s: {what}")


def children(pid: int) -> set[int]:
    """The direct children of a process (gunicorn's workers, an RQ worker's work horse)."""
    try:
        return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def web_beat(engine: sa.Engine, pid: int) -> bool:
    """Whether web process `pid` has written its heartbeat (its reporter starts once the app is loaded)."""
    with engine.connect() as conn:
        return bool(
            conn.scalar(
                sa.text("SELECT count(*) FROM process_heartbeats WHERE role = 'web' AND process = :p"),
                {"p": f"{socket.gethostname()}:{pid}"},
            )
        )


class Processes:
    """The service's processes for one drill, each in its own session, logging to one file."""

    def __init__(self, tmp_path: Path, env: dict[str, str]):
        self.env = {**os.environ, "STRIPE_WEBHOOK_SECRETS": SECRET, "LOG_LEVEL": "INFO", **env}
        self.log_path = tmp_path / "processes.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.running: dict[str, subprocess.Popen] = {}
        self.port = free_port()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self, name: str, argv: list[str], **env: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env={**self.env, **env}, stdout=self._log, stderr=self._log,
            start_new_session=True,
        )  # fmt: skip
        self.running[name] = proc
        return proc

    def web(self, workers: int = 2, threads: int = 4) -> subprocess.Popen:
        """gunicorn as the Procfile runs it; returns once /healthz answers."""
        proc = self.spawn(
            "web",
            [sys.executable, "-m", "gunicorn", "wsgi:app", "--config", "gunicorn.conf.py"],
            PORT=str(self.port), BIND=f"127.0.0.1:{self.port}", WEB_CONCURRENCY=str(workers),
            GUNICORN_THREADS=str(threads),
        )  # fmt: skip
        wait_for(self._healthy, 30, f"gunicorn answers /healthz\n{self.log_tail()}")
        return proc

    def worker(self, name: str = "worker") -> subprocess.Popen:
        return self.spawn(name, [SCRIPT, "worker"])

    def scheduler(self, name: str = "scheduler") -> subprocess.Popen:
        return self.spawn(name, [SCRIPT, "scheduler"])

    def _healthy(self) -> bool:
        try:
            return requests.get(f"{self.base_url}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def signal_tree(self, name: str, signum: int) -> None:
        """Send `signum` to every process of `name`'s session (a platform stopping a dyno does)."""
        proc = self.running[name]
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    def wait_exit(self, name: str, timeout: float) -> int:
        return self.running[name].wait(timeout)

    def alive(self, name: str) -> bool:
        return self.running[name].poll() is None

    def stop(self, timeout: float = 25) -> None:
        for name in list(self.running):
            self.signal_tree(name, signal.SIGTERM)
        for name, proc in list(self.running.items()):
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal_tree(name, signal.SIGKILL)
                proc.wait(10)
        self.running.clear()
        self._log.close()

    def log_tail(self, chars: int = 6000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]


@dataclass
class Expected:
    """What the stream's invoices must end as."""

    invoices: dict[str, str] = field(default_factory=dict)  # id -> final status
    past_due: set[str] = field(default_factory=set)  # invoices with a past-due episode
    event_ids: set[str] = field(default_factory=set)


def lifecycles(seed: str, count: int) -> tuple[list[dict], Expected]:
    """`count` invoice lifecycles (created, finalized, paid, payment_succeeded; every third with a
    failed payment first, hence a past-due episode and its two notifications)."""
    ids = Ids(f"drill-{seed}")
    customers = [Customer(ids.make("cus"), f"Drill {seed} {i}", f"d{i}@example.com") for i in range(5)]
    events: list[dict] = []
    expected = Expected()
    for i in range(count):
        at = T0 + i * 10
        lines = [Line(ids.make("il"), "Plan", 4900 + i, price_id="price_1D", product_id="prod_1D")]
        life = InvoiceLifecycle(
            ids, customers[i % len(customers)], NEW_API, at, lines, number=f"DR-{seed}-{i:05d}"
        )
        life.created(at)
        life.finalized(at + 3600)
        if i % 3 == 0:
            life.payment_failed(at + 3605)
            expected.past_due.add(life.id)
        life.paid(at + 7200)
        events += life.events
        expected.invoices[life.id] = "paid"
    expected.event_ids = {e["id"] for e in events}
    return events, expected


@dataclass
class Attempt:
    """One delivery attempt: wall-clock start and end, and the HTTP status (0: no answer)."""

    started: float
    ended: float
    status: int
    event_id: str


class DeliveryStream:
    """Stripe, in miniature: every event delivered twice (the copy later, at random), signed at
    send time, `senders` at once, at most `rate` per second; anything but a 2xx is sent again
    after `backoff` seconds until `deadline`. Start it, inject the fault, then `finish()`."""

    def __init__(
        self, base_url: str, events: list[dict], *, seed: int = 0, senders: int = 4, rate: float = 80.0,
        backoff: float = 0.25, timeout: float = 15.0,
    ):  # fmt: skip
        deliveries = events + events
        random.Random(seed).shuffle(deliveries)
        self.url = f"{base_url}/webhooks/stripe"
        self.total = len(deliveries)
        self._todo: queue.Queue[tuple[float, dict]] = queue.Queue()
        for event in deliveries:
            self._todo.put((0.0, event))
        self.senders, self.interval, self.backoff, self.timeout = senders, senders / rate, backoff, timeout
        self.attempts: list[Attempt] = []
        self.acked: dict[str, float] = {}  # event id -> first 2xx (wall clock)
        self.delivered = 0  # deliveries that got their 2xx
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def start(self) -> DeliveryStream:
        for _ in range(self.senders):
            thread = threading.Thread(target=self._send, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def progress(self) -> float:
        with self._lock:
            return self.delivered / self.total

    def _send(self) -> None:
        session = requests.Session()
        try:
            self._send_with(session)
        finally:
            session.close()  # an idle keep-alive connection would hold gunicorn's graceful stop

    def _send_with(self, session: requests.Session) -> None:
        while not self._stop.is_set():
            try:
                not_before, event = self._todo.get(timeout=0.1)
            except queue.Empty:
                with self._lock:
                    if self.delivered == self.total:
                        return
                continue
            pause = max(not_before - time.time(), 0.0)
            time.sleep(pause + self.interval)
            body = json.dumps(event).encode()
            headers = {"Content-Type": "application/json", "Stripe-Signature": sign(body, SECRET)}
            started = time.time()
            try:
                status = session.post(self.url, data=body, headers=headers, timeout=self.timeout).status_code
            except requests.RequestException:
                status = 0
                session.close()  # the connection may be half dead
            ended = time.time()
            with self._lock:
                self.attempts.append(Attempt(started, ended, status, event["id"]))
                if 200 <= status < 300:
                    self.acked.setdefault(event["id"], ended)
                    self.delivered += 1
            if not 200 <= status < 300:
                self._todo.put((ended + self.backoff, event))

    def finish(self, timeout: float) -> None:
        """Wait until every delivery got its 2xx (AssertionError after `timeout`)."""
        try:
            wait_for(
                lambda: self.progress() == 1.0, timeout, f"every delivery acknowledged ({self.summary()})"
            )
        finally:
            self._stop.set()
            for thread in self._threads:
                thread.join(5)

    def first_ack_after(self, at: float) -> float | None:
        """Seconds from `at` to the first 2xx of a request sent at or after it."""
        with self._lock:
            ends = [a.ended for a in self.attempts if a.started >= at and 200 <= a.status < 300]
        return min(ends) - at if ends else None

    def failures_after(self, at: float) -> dict[int, int]:
        with self._lock:
            found: dict[int, int] = {}
            for a in self.attempts:
                if a.started >= at and not 200 <= a.status < 300:
                    found[a.status] = found.get(a.status, 0) + 1
            return found

    def summary(self) -> str:
        with self._lock:
            statuses: dict[int, int] = {}
            for a in self.attempts:
                statuses[a.status] = statuses.get(a.status, 0) + 1
            return f"{self.delivered}/{self.total} delivered, attempts by status {statuses}"


def first_processed_after(engine: sa.Engine, at: float) -> float | None:
    """Seconds from `at` (wall clock) to the first event the worker processed after it."""
    with engine.connect() as conn:
        first = conn.scalar(
            sa.text("SELECT min(processed_at) FROM stripe_events WHERE processed_at > :at"),
            {"at": datetime.fromtimestamp(at, UTC)},
        )
    return None if first is None else first.replace(tzinfo=UTC).timestamp() - at


def _unprocessed(engine: sa.Engine, ids: Iterable[str]) -> dict[str, str | None]:
    with engine.connect() as conn:
        found = dict(
            conn.execute(
                sa.text("SELECT id, status FROM stripe_events WHERE id = ANY(:ids)"), {"ids": list(ids)}
            ).all()
        )
    return {i: found.get(i) for i in ids if found.get(i) not in ("processed", "ignored")}


def check_outcome(engine: sa.Engine, stream: DeliveryStream, expected: Expected, timeout: float = 30) -> None:
    """Acknowledged-then-lost = 0, everything processed, final statuses, one notification per
    audience per past-due episode (the common end of every drill)."""
    acked = set(stream.acked)
    assert acked == expected.event_ids, "the stream did not finish"
    with engine.connect() as conn:
        kept = set(
            conn.scalars(sa.text("SELECT id FROM stripe_events WHERE id = ANY(:ids)"), {"ids": list(acked)})
        )
    lost = acked - kept
    assert not lost, f"acknowledged-then-lost: {len(lost)} ({sorted(lost)[:5]})"
    try:
        wait_for(lambda: not _unprocessed(engine, acked), timeout, "every acknowledged event processed", 0.2)
    except AssertionError:
        left = _unprocessed(engine, acked)
        raise AssertionError(
            f"{len(left)} acknowledged events not processed: {list(left.items())[:5]}"
        ) from None
    with engine.connect() as conn:
        statuses = dict(conn.execute(sa.text("SELECT id, status FROM invoices")).all())
        notes = conn.execute(
            sa.text("SELECT invoice_id, kind, audience, count(*) FROM notifications GROUP BY 1, 2, 3")
        ).all()
    assert statuses == expected.invoices
    assert all(count == 1 for *_, count in notes)
    per_invoice: dict[str, set[str]] = {}
    for invoice_id, _kind, audience, _count in notes:
        per_invoice.setdefault(invoice_id, set()).add(audience)
    assert set(per_invoice) == expected.past_due
    assert all(len(audiences) == 2 for audiences in per_invoice.values()), per_invoice


def report(drill: str, **figures: object) -> None:
    """One `DRILL <name> {...}` line with the measured figures (seen with `pytest -s`); also
    appended to $DRILL_REPORT when set, for the fault matrix's medians."""
    line = f"DRILL {drill} {json.dumps(figures, default=str)}"
    print(line)
    target = os.environ.get("DRILL_REPORT")
    if target:
        with open(target, "a") as out:
            out.write(line + "\n")

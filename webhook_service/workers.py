"""RQ workers whose jobs run inside the app's context, through RQ's documented extension points.

A custom job class (RQ's `job_class`, as `rq worker --job-class` takes) wraps `Job.perform`, the
call that runs the job function, in the work horse or in-process alike: it pushes the app context
(so jobs find their services) and, in a forked work horse, first drops the pooled database
connections inherited from the parent (a socket shared across processes gets corrupted). The
worker classes are RQ's own `Worker` and `SimpleWorker`, with one public method extended:
`heartbeat`, which RQ's loop calls while idle and while a job runs, also writes this process's
heartbeat to the database for /metrics. Only the embedded dev worker, which runs in a thread,
replaces how RQ installs its signal handlers (signals belong to the main thread).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import redis
from flask import Flask
from rq import SimpleWorker, Worker, worker_registration
from rq.cron import CronScheduler
from rq.exceptions import StopRequested
from rq.job import Job
from rq.timeouts import TimerDeathPenalty
from rq.worker import BaseWorker

from webhook_service.core.config import Config
from webhook_service.processing import heartbeats
from webhook_service.processing.db import Database
from webhook_service.web.services import get_services

logger = logging.getLogger(__name__)

#: How often the embedded worker looks for due retries and lost work when idle.
EMBEDDED_POLL_SECONDS = 0.2
#: How often the embedded worker runs recovery (what the scheduler process does in production).
EMBEDDED_RECOVERY_SECONDS = 30.0
#: RQ blocks on Redis for this minus 15 s when idle, then beats: our heartbeat needs one a minute.
WORKER_TTL_SECONDS = 75


class AppJob(Job):
    """A job that runs in its app's context; `job_class_for` binds it to one app."""

    app: ClassVar[Flask]
    #: The process that built the worker; a job running in another one is in a forked work horse.
    parent_pid: ClassVar[int]

    def perform(self) -> Any:
        if os.getpid() != self.parent_pid:
            get_services(self.app).db.dispose_after_fork()
        with self.app.app_context():
            return super().perform()


def job_class_for(app: Flask) -> type[AppJob]:
    """The job class of a worker bound to `app`."""
    return type("BoundAppJob", (AppJob,), {"app": app, "parent_pid": os.getpid()})


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stop_signals_deferred() -> Iterator[None]:
    """Hold SIGTERM/SIGINT while the block runs, then deliver them to the handlers in place.

    RQ's handlers (worker and cron alike) stop an idle loop by raising StopRequested wherever the
    main thread stands. Inside a database call that can be lost: SQLAlchemy's pool logs and
    swallows an exception raised while it resets a connection, and the loop then blocks on Redis
    again, outliving the deploy's grace period. Only the main thread owns signal handlers; in
    any other (the embedded dev worker) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: held.append(signum)) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in held:
            signal.raise_signal(signum)  # the handler runs here, outside the database call


class _DatabaseHeartbeat:
    """RQ's heartbeat (Redis) plus ours (the database, at most every 10 s): the "worker" role in /metrics.

    Forked work horses inherit this but do not beat (heartbeats.Heartbeat checks the pid).
    """

    db_heartbeat: heartbeats.Heartbeat

    def heartbeat(self, *args, **kwargs):
        worker: Any = self
        with stop_signals_deferred():
            self.db_heartbeat.maybe_beat()
        if kwargs.get("pipeline") is not None or len(args) > 1:
            return super().heartbeat(*args, **kwargs)
        try:
            if not worker.connection.exists(worker.key):
                # Redis restarted empty: RQ's heartbeat would only refresh a hash that is gone,
                # and the worker would work on, invisible to `rq info`. Register it again.
                logger.warning("worker %s: Redis lost its registration; registering again", worker.name)
                with worker.connection.pipeline() as fresh:
                    fresh.hset(worker.key, mapping=worker.serialize())
                    worker_registration.register(worker, fresh)
                    fresh.execute()
            return super().heartbeat(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # RQ's loop would quit on this (it waits Redis out only around its BLPOP): skip this
            # beat; the next one registers again if needed.
            reason = type(exc).__name__
            logger.warning("worker %s: heartbeat skipped, Redis unavailable (%s)", worker.name, reason)
            return None


def stop_requested(worker: BaseWorker) -> bool:
    """Whether a worker whose `work()` returned was told to stop (SIGTERM/SIGINT, a stop command)
    rather than having quit on an error; without it the worker command could not tell a shutdown
    from a crash. RQ keeps this privately, in two places: `_stop_requested` only for a stop that
    came mid-job, and `_shutdown_requested_date` for every warm stop. Reading the first alone took
    an idle worker's SIGTERM for an error: the command started RQ's loop again and ran on until
    the platform's SIGKILL (tests/test_workers.py pins both names)."""
    mid_job = getattr(worker, "_stop_requested", False)
    return bool(mid_job or getattr(worker, "_shutdown_requested_date", None))


class AppWorker(_DatabaseHeartbeat, Worker):
    """RQ's Worker (a work horse per job) that beats in the database too."""


class AppSimpleWorker(_DatabaseHeartbeat, SimpleWorker):
    """RQ's SimpleWorker (jobs in this process) that beats in the database too."""


class _ThreadWorker(AppSimpleWorker):
    #: SIGALRM timeouts need the main thread; a timer thread enforces job timeouts instead.
    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self):
        """Signals belong to the main thread (the dev server); this worker stops through its event.

        The one RQ internal this module replaces, and only in the dev-only embedded worker: RQ
        offers no switch for it (tests/test_workers.py fails if RQ renames it).
        """


def build_worker(app: Flask, *, forking: bool = True, name: str | None = None) -> BaseWorker:
    """A worker on the app's queue whose jobs run in the app's context.

    `forking`: RQ's `Worker`, a work horse per job (isolation, hard timeouts); otherwise RQ's
    `SimpleWorker`, jobs in this process (tests, benchmarks, platforms without fork).
    """
    services = get_services(app)
    cls = AppWorker if forking else AppSimpleWorker
    worker = cls(
        [services.queue.queue],
        connection=services.queue.connection,
        name=name,
        job_class=job_class_for(app),
        worker_ttl=WORKER_TTL_SECONDS,
    )
    worker.db_heartbeat = heartbeats.Heartbeat(services.db, "worker")
    return worker


#: Holds the name of the scheduler that leads; the others stand by (see AppCronScheduler).
LEADER_KEY = "webhook-service:{queue}:scheduler-leader"
#: Take the lease, or renew it if it is ours (atomically: a lapsed lease is never renewed by two).
_LEAD = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
  return 1
end
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
_RESIGN = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def leader_key(queue_name: str = Config.queue_name) -> str:
    """The Redis key of the scheduler lease of the deployment that uses `queue_name`."""
    return LEADER_KEY.format(queue=queue_name)


class AppCronScheduler(CronScheduler):
    """RQ's cron loop, beating as the "scheduler" role, led by one process at a time.

    RQ's cron has no leader election: two scheduler processes (a rolling deploy's overlap, a
    second one by mistake) would each enqueue recovery, the sweep and the prune. So each turn a
    scheduler takes or renews a lease in Redis (`lease_seconds`, renewed every third of it);
    only the holder enqueues. A standby follows the leader's runs as RQ's job history records
    them, so when it takes over (the leader gave the lease up on SIGTERM, or stopped renewing
    it) it neither repeats a run the leader made nor skips one the leader did not live to make.
    """

    #: How long the loop waits before trying Redis again.
    retry_seconds: ClassVar[float] = 2.0

    def __init__(self, db: Database, *, queue_name: str, lease_seconds: float = 15.0, **kwargs):
        super().__init__(**kwargs)
        self._db_heartbeat = heartbeats.Heartbeat(db, "scheduler")
        self.leader_key = leader_key(queue_name)
        self.lease_seconds = lease_seconds
        self.leading = False
        self._announced: bool | None = None  # what the log last said: a standby says so at start too

    def heartbeat(self) -> None:
        with stop_signals_deferred():
            self._db_heartbeat.maybe_beat()
        super().heartbeat()

    def lead(self) -> bool:
        """Take or renew the lease; whether this scheduler leads now."""
        lease_ms = max(int(self.lease_seconds * 1000), 1)
        leading = bool(self.connection.eval(_LEAD, 1, self.leader_key, self.name, lease_ms))
        if leading != self._announced:
            self._announced = leading
            logger.info(
                "scheduler %s: %s", self.name, "leading" if leading else "standing by (another leads)"
            )
        self.leading = leading
        return leading

    def resign(self) -> None:
        """Give the lease up (on the way out), so a standby takes over at its next turn."""
        self.connection.eval(_RESIGN, 1, self.leader_key, self.name)
        self.leading = False

    def follow_leader(self) -> None:
        """As a standby, count as done what the leader did enqueue, as RQ's job history in Redis
        records it (never merely what was due: a leader killed just before a daily run would
        otherwise take that run with it, and the standby taking over would skip it for a day)."""
        for job in self.get_jobs():
            newest = self.connection.zrevrange(job.job_history_key, 0, 0, withscores=True)
            if not newest:
                continue
            enqueued = datetime.fromtimestamp(float(newest[0][1]), tz=UTC)
            if job.latest_enqueue_time is None or enqueued > job.latest_enqueue_time:
                job.set_enqueue_time(enqueued)

    def tick(self) -> float:
        """One turn: lead and enqueue what is due, or stand by; beat; return the pause before the next."""
        if self.lead():
            if self.enqueue_jobs():
                self.save()
        else:
            self.follow_leader()
        self.heartbeat()
        return min(self.calculate_sleep_interval(), self.lease_seconds / 3)

    def start(self) -> None:
        """RQ's loop (enqueue what is due, save, beat, sleep), led as above, and a Redis outage or
        an empty restart is waited out, registering again, instead of ending the process; a run
        missed meanwhile happens as soon as Redis answers."""
        self._install_signal_handlers()
        registered = False
        try:
            while True:
                try:
                    if not registered:
                        self.register_birth()
                        registered = True
                    pause = self.tick()
                except redis.RedisError as exc:
                    logger.warning("scheduler: Redis unavailable (%s); retrying", type(exc).__name__)
                    registered = False
                    pause = self.retry_seconds
                if pause > 0:
                    time.sleep(pause)
        except (KeyboardInterrupt, StopRequested):
            logger.info("scheduler: stopping")
        finally:
            with contextlib.suppress(redis.RedisError):
                self.resign()
            with contextlib.suppress(redis.RedisError):
                self.register_death()


class EmbeddedWorker:
    """The dev/demo queue's consumer: a thread that works RQ in bursts, scheduler included."""

    def __init__(self, app: Flask):
        self.app = app
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="embedded-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        from webhook_service.processing import recovery

        services = get_services(self.app)
        worker = _ThreadWorker(
            [services.queue.queue], connection=services.queue.connection, job_class=job_class_for(self.app)
        )
        worker.db_heartbeat = heartbeats.Heartbeat(services.db, "worker")
        since_recovery = EMBEDDED_RECOVERY_SECONDS  # recover once at start
        scheduler_beat = heartbeats.Heartbeat(services.db, "scheduler")  # it does the scheduler's work too
        while not self._stop.is_set():
            try:
                scheduler_beat.maybe_beat()
                if since_recovery >= EMBEDDED_RECOVERY_SECONDS:
                    recovery.recover(services.db, services.queue)
                    since_recovery = 0.0
                # with_scheduler in burst mode moves due retries to the queue, then works it empty.
                worker.work(burst=True, with_scheduler=True, logging_level="WARNING")
            except Exception:  # noqa: BLE001 - keep the dev worker alive; the error is logged
                logger.exception("embedded worker error")
            self._stop.wait(EMBEDDED_POLL_SECONDS)
            since_recovery += EMBEDDED_POLL_SECONDS

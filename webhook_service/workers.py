"""RQ worker classes that run jobs inside the app's context."""

from __future__ import annotations

import logging
import threading

from flask import Flask
from rq import SimpleWorker, Worker
from rq.timeouts import TimerDeathPenalty
from rq.worker import BaseWorker

from webhook_service.web.services import get_services

logger = logging.getLogger(__name__)

#: How often the embedded worker looks for due retries and lost work when idle.
EMBEDDED_POLL_SECONDS = 0.2
#: How often the embedded worker runs recovery (what the scheduler process does in production).
EMBEDDED_RECOVERY_SECONDS = 30.0


class _AppContextMixin:
    """Push the app context around each job, as flask-rq's FlaskJob does, so jobs find their services."""

    app: Flask

    def perform_job(self, job, queue):
        with self.app.app_context():
            return super().perform_job(job, queue)


class AppWorker(_AppContextMixin, Worker):
    """Production worker: forks a work-horse per job (isolation, hard timeouts)."""

    def main_work_horse(self, job, queue):
        # The horse inherits the parent's pooled connections; sharing a socket across processes corrupts it.
        get_services(self.app).db.dispose_after_fork()
        return super().main_work_horse(job, queue)


class AppSimpleWorker(_AppContextMixin, SimpleWorker):
    """In-process worker (tests, benchmarks, platforms without fork)."""


class _ThreadWorker(AppSimpleWorker):
    #: SIGALRM timeouts need the main thread; a timer thread enforces job timeouts instead.
    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self):
        """Signals belong to the main thread (the dev server); this worker stops through its event."""


def build_worker(app: Flask, *, forking: bool = True, name: str | None = None) -> BaseWorker:
    """A worker on the app's queue, bound to the app."""
    services = get_services(app)
    cls = AppWorker if forking else AppSimpleWorker
    worker = cls([services.queue.queue], connection=services.queue.connection, name=name)
    worker.app = app
    return worker


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
        worker = _ThreadWorker([services.queue.queue], connection=services.queue.connection)
        worker.app = self.app
        since_recovery = EMBEDDED_RECOVERY_SECONDS  # recover once at start
        while not self._stop.is_set():
            try:
                if since_recovery >= EMBEDDED_RECOVERY_SECONDS:
                    recovery.recover(services.db, services.queue)
                    since_recovery = 0.0
                # with_scheduler in burst mode moves due retries to the queue, then works it empty.
                worker.work(burst=True, with_scheduler=True, logging_level="WARNING")
            except Exception:  # noqa: BLE001 - keep the dev worker alive; the error is logged
                logger.exception("embedded worker error")
            self._stop.wait(EMBEDDED_POLL_SECONDS)
            since_recovery += EMBEDDED_POLL_SECONDS

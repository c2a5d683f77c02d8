"""A web process's background reporter: its heartbeat and its rejection counts, every few seconds.

Started once per serving process (gunicorn's `post_worker_init` in gunicorn.conf.py, and `serve`),
not by the app factory: tests and commands build apps that serve nothing and should not beat.
"""

from __future__ import annotations

import logging
import os
import threading

from flask import Flask

from webhook_service.processing import heartbeats
from webhook_service.web import rejections
from webhook_service.web.services import get_services

logger = logging.getLogger(__name__)

EXTENSION_KEY = "webhook_service.reporter"


class Reporter:
    """Every `interval` seconds: write pending rejection counts, then a "web" heartbeat."""

    def __init__(self, app: Flask, interval: float = heartbeats.BEAT_INTERVAL_SECONDS):
        self.app = app
        self.interval = interval
        self.pid = os.getpid()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-reporter", daemon=True)

    def start(self) -> Reporter:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop, writing what is pending one last time (gunicorn's `worker_exit`)."""
        self._stop.set()
        self._thread.join(timeout)
        self.report()

    def report(self) -> None:
        db = get_services(self.app).db
        rejections.tally(self.app).flush(db)
        heartbeats.Heartbeat(db, "web", interval=0).maybe_beat()

    def _run(self) -> None:
        while True:
            try:
                self.report()
            except Exception:  # noqa: BLE001 - a reporting failure must not kill the thread
                logger.exception("metrics reporter error")
            if self._stop.wait(self.interval):
                return


def start_reporter(app: Flask) -> Reporter:
    """Start this process's reporter for `app` (once per process; a forked child starts its own)."""
    current = app.extensions.get(EXTENSION_KEY)
    if current is not None and current.pid == os.getpid():
        return current
    reporter = app.extensions[EXTENSION_KEY] = Reporter(app).start()
    return reporter

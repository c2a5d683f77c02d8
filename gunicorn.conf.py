"""Gunicorn settings for the receiver (`gunicorn wsgi:app --config gunicorn.conf.py`)."""

import multiprocessing
import os


def _bind(environ) -> str:
    """BIND (e.g. 127.0.0.1:8000, 0.0.0.0:80, unix:/run/web.sock) wins; else a platform's PORT
    (Heroku and the like route to it from outside, so every interface); else 127.0.0.1:8000, so a
    development machine does not offer the receiver to its whole network."""
    if environ.get("BIND", "").strip():
        return environ["BIND"].strip()
    if environ.get("PORT", "").strip():
        return f"0.0.0.0:{environ['PORT'].strip()}"
    return "127.0.0.1:8000"


bind = _bind(os.environ)
#: One process per core: a process runs Python on one core at a time anyway, and fewer, fuller
#: processes make larger groups for the intake's group commit (docs/benchmarks.md: 2x8 beat 4x4).
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
#: Each request waits for a PostgreSQL commit and a Redis round trip; the threads of a process that
#: wait together share one INSERT, one commit and one SET NX (webhook_service/processing/intake.py).
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
#: Stripe publishes no timeout; we answer in milliseconds, so a slow request is a stuck dependency.
timeout = 30
graceful_timeout = 20
keepalive = 5
#: Structured logs come from the app; gunicorn's access log would add a second line per event.
accesslog = None
errorlog = "-"


def on_starting(server):
    """Refuse to start (one line, exit 2) on bad config, no REDIS_URL, an unreachable or unmigrated
    database: checked once in the master, before workers boot (a worker that fails to boot would
    only be respawned, forever)."""
    from webhook_service.startup import check_web_tier

    check_web_tier()


def post_worker_init(worker):
    """Each serving process reports its heartbeat and rejection counts (webhook_service/web/reporter.py)."""
    from webhook_service.web.reporter import start_reporter

    worker.reporter = start_reporter(worker.wsgi)


def worker_exit(server, worker):
    """Write what the reporter still holds before the process goes."""
    reporter = getattr(worker, "reporter", None)
    if reporter is not None:
        reporter.stop()

"""Gunicorn settings for the receiver (`gunicorn wsgi:app --config gunicorn.conf.py`)."""

import multiprocessing
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
#: The request path is short (HMAC, one INSERT, one Redis SET); a few processes saturate the cores.
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2))
#: Each request waits on a PostgreSQL commit and a Redis round trip; threads keep the CPU busy
#: meanwhile (sync workers would cap in-flight requests at `workers`).
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
#: Stripe publishes no timeout; we answer in milliseconds, so a slow request is a stuck dependency.
timeout = 30
graceful_timeout = 20
keepalive = 5
#: Structured logs come from the app; gunicorn's access log would add a second line per event.
accesslog = None
errorlog = "-"

"""Gunicorn entry point: `gunicorn wsgi:app`. The only module that builds an app at import."""

from webhook_service.startup import build_app_or_exit

app = build_app_or_exit(require_webhook_secret=True)

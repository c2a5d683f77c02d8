"""The one place that turns typed errors and HTTP exceptions into JSON responses."""

from __future__ import annotations

import logging
from collections import deque

import sentry_sdk
import sqlalchemy as sa
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from webhook_service.core.errors import ServiceError, ServiceUnavailable, error_summary
from webhook_service.core.models import utcnow
from webhook_service.processing.db import is_connection_error

logger = logging.getLogger(__name__)


def error_body(status_code: int, code: str, message: str):
    """Render the JSON error shape every endpoint shares."""
    response = jsonify({"error": code, "message": message})
    response.status_code = status_code
    return response


def register_error_handlers(app: Flask) -> None:
    """Map typed errors and HTTP exceptions to JSON, in one place."""

    @app.errorhandler(ServiceError)
    def _service_error(exc: ServiceError):
        response = error_body(exc.status_code, exc.code, exc.message)
        if exc.status_code == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="portal API"'
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        allowed = sorted(getattr(exc, "valid_methods", None) or [])
        data = getattr(exc, "data", None)  # webargs puts its validation messages here
        if exc.code == 413:
            message = "Request body is larger than the 1 MiB limit for a Stripe event."
        elif exc.code == 405:
            message = f"Method not allowed here; allowed: {', '.join(allowed)}."
        elif isinstance(data, dict) and isinstance(data.get("messages"), dict):
            # webargs validation: name each bad parameter and why
            problems = []
            for location in data["messages"].values():
                for field, reasons in location.items():
                    problems.append(f"{field}: {' '.join(map(str, reasons))}")
            message = "Invalid parameters: " + "; ".join(problems)
        else:
            message = exc.description or exc.name
        response = error_body(exc.code or 500, code, message)
        if exc.code == 405 and allowed:
            response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(sa.exc.DBAPIError)
    @app.errorhandler(sa.exc.TimeoutError)
    def _database_error(exc: Exception):
        if not is_connection_error(exc):
            # A statement the database refuses (schema drift after a bad deploy, a bug): a 500
            # that is reported and shown in /readyz, never a quiet 503 that Stripe retries for days.
            return _unexpected(exc)
        # The database is unreachable, not answering, or out of connections: retry later.
        logger.error("database unavailable: %s", error_summary(exc))
        return error_body(503, ServiceUnavailable.code, "Database unavailable; retry later.")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        # A registered handler stops Flask's got_request_exception signal, which is what Sentry's
        # Flask integration listens to, so report it here. Bodies never reach Sentry (observability.py).
        sentry_sdk.capture_exception(exc)
        logger.exception("unhandled error: %s", error_summary(exc))
        _recent.append({"at": utcnow().isoformat(timespec="seconds"), "error": error_summary(exc)})
        return error_body(500, "internal_error", "Internal error; it has been logged.")


#: The last internal errors of this process, for /readyz (a bad deploy shows there at once).
_recent: deque[dict[str, str]] = deque(maxlen=5)


def recent_internal_errors() -> list[dict[str, str]]:
    """The last few 500s of this process: when, and the error's first line."""
    return list(_recent)

"""The operator console at /console: server-rendered pages for operators and billing admins.

Pages (one module each): events, processing, invoices, customers, audit; auth logs operators in.
No JavaScript: every action is a POST form with a CSRF token. docs/operations.md describes it.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import sqlalchemy as sa
from flask import Flask, abort, render_template, request
from werkzeug.exceptions import HTTPException

from webhook_service.web.console import audit, auth, customers, events, invoices, processing, security
from webhook_service.web.console.blueprint import PREFIX, bp
from webhook_service.web.console.formatting import FILTERS

__all__ = ["PREFIX", "init_app", "audit", "customers", "events", "invoices", "processing"]

logger = logging.getLogger(__name__)

#: The navigation bar: (endpoint, label, section); a page's section is its endpoint's first word.
NAV = (
    ("console.events_list", "Events", "events"),
    ("console.processing_show", "Processing", "processing"),
    ("console.invoices_list", "Invoices", "invoices"),
    ("console.invoices_past_due", "Past due", "past_due"),
    ("console.customers_list", "Customers", "customers"),
    ("console.audit_list", "Audit", "audit"),
)


def _section(endpoint: str | None) -> str:
    name = (endpoint or "").partition(".")[2]
    return "past_due" if name == "invoices_past_due" else name.partition("_")[0]


@bp.before_request
def _csrf():
    if request.method == "POST":
        security.check_csrf()


@bp.route("/<path:_unknown>", methods=["GET", "POST"])
def not_found(_unknown: str):
    """Unknown console paths: the console's own 404 page, after the login check like any page."""
    abort(404)


@bp.app_template_global()
def csrf_token() -> str:
    return security.csrf_token()


@bp.context_processor
def _page_context():
    return {
        "operator": auth.current_operator(),
        "nav": NAV,
        "section": _section(request.endpoint),
    }


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    return render_template("console/error.html", code=exc.code, name=exc.name, message=exc.description), (
        exc.code or 500
    )


@bp.errorhandler(sa.exc.DBAPIError)
def _database_error(exc: sa.exc.DBAPIError):
    logger.error("console: database error: %s", type(exc.orig or exc).__name__)
    message = "The database did not answer. Retry in a moment; /readyz says what is down."
    return render_template("console/error.html", code=503, name="Database unavailable", message=message), 503


def init_app(app: Flask, session_key: bytes | None) -> None:
    """Register the console; without a session key (no OPERATOR_KEYS) every page says it is closed."""
    security.configure_app(app, session_key)
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=auth.SESSION_HOURS)
    # Globals, not context: macros imported by templates see globals only.
    app.jinja_env.globals["csrf_field"] = security.CSRF_FIELD
    for name, function in FILTERS.items():
        app.jinja_env.filters.setdefault(name, function)
    app.register_blueprint(bp)

    @app.after_request
    def _console_headers(response):
        # App-wide hook, so errors raised before the blueprint's own code (405s) get the headers too.
        if request.path == PREFIX or request.path.startswith(PREFIX + "/"):
            security.add_headers(response)
        return response

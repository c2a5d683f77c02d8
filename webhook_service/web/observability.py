"""Sentry, configured so request bodies, signature headers and keys never leave the process."""

from __future__ import annotations

from typing import Any

import sentry_sdk
from sentry_sdk.integrations.flask import FlaskIntegration
from sentry_sdk.integrations.rq import RqIntegration

from webhook_service.core.config import Config
from webhook_service.core.errors import error_summary

#: Headers that carry secrets or signed material; dropped from every Sentry event.
SENSITIVE_HEADERS = frozenset({"stripe-signature", "authorization", "cookie", "x-api-key"})


def scrub_event(event: Any, _hint: Any = None) -> Any:
    """Remove request bodies, sensitive headers, cookies and query strings from a Sentry event,
    and cut every error message and log breadcrumb to its first line without SQL or values."""
    for value in (event.get("exception") or {}).get("values") or []:
        if isinstance(value, dict) and isinstance(value.get("value"), str):
            value["value"] = error_summary(value["value"])
    logentry = event.get("logentry")
    if isinstance(logentry, dict):
        for key in ("message", "formatted"):
            if isinstance(logentry.get(key), str):
                logentry[key] = error_summary(logentry[key])
        logentry.pop("params", None)
    if isinstance(event.get("message"), str):
        event["message"] = error_summary(event["message"])
    breadcrumbs = event.get("breadcrumbs")
    crumbs = breadcrumbs.get("values") if isinstance(breadcrumbs, dict) else breadcrumbs
    for crumb in crumbs if isinstance(crumbs, list) else []:
        if isinstance(crumb, dict):
            if isinstance(crumb.get("message"), str):
                crumb["message"] = error_summary(crumb["message"])
            crumb.pop("data", None)
    request = event.get("request")
    if isinstance(request, dict):
        request.pop("data", None)
        request.pop("cookies", None)
        request.pop("query_string", None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            request["headers"] = {k: v for k, v in headers.items() if k.lower() not in SENSITIVE_HEADERS}
    return event


def init_sentry(config: Config, **options) -> None:
    """Enable Sentry for web and jobs when SENTRY_DSN is set (options are for tests: a transport)."""
    if not config.sentry_dsn and "transport" not in options:
        return
    sentry_sdk.init(
        dsn=config.sentry_dsn,
        integrations=[FlaskIntegration(transaction_style="url"), RqIntegration()],
        max_request_body_size="never",
        # Frame locals would carry the raw body, signature header and secrets of the failing frame.
        include_local_variables=False,
        before_send=scrub_event,
        before_send_transaction=scrub_event,
        **options,
    )

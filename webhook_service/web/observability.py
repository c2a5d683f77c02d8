"""Sentry, configured so request bodies, signature headers and keys never leave the process."""

from __future__ import annotations

from typing import Any

import sentry_sdk
from sentry_sdk.integrations.flask import FlaskIntegration
from sentry_sdk.integrations.rq import RqIntegration

from webhook_service.core.config import Config

#: Headers that carry secrets or signed material; dropped from every Sentry event.
SENSITIVE_HEADERS = frozenset({"stripe-signature", "authorization", "cookie", "x-api-key"})


def scrub_event(event: Any, _hint: Any = None) -> Any:
    """Remove request bodies, sensitive headers, cookies and query strings from a Sentry event."""
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

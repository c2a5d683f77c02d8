"""What keeps the console's pages and actions to operators: session cookie, CSRF, headers.

- The session is Flask's signed cookie, scoped to /console, HttpOnly, SameSite=Lax, and Secure
  whenever the request came over HTTPS (as the WSGI server saw it, or as the proxies named by
  CONSOLE_TRUSTED_PROXIES say in X-Forwarded-Proto; never from an untrusted header).
- Every POST carries the session's CSRF token in a hidden field (compared in constant time) and,
  when the browser sends one, an Origin of this host.
- Every response forbids framing and inline script; pages are never cached.
"""

from __future__ import annotations

import hmac
import secrets

from flask import Flask, abort, request, session
from flask.sessions import SecureCookieSessionInterface

from webhook_service.web.services import get_services

SESSION_COOKIE_NAME = "whs_console"
CSRF_FIELD = "csrf_token"
_CSRF_SESSION_KEY = "csrf"
_CSRF_REFUSED = "The form's security token is missing or out of date. Reload the page and try again."
#: No script at all: the console works without JavaScript, so the policy can forbid it outright.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Links go out to Stripe's hosted invoices: they must not learn console URLs (they hold ids).
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _forwarded(header: str) -> str | None:
    """The value the outermost trusted proxy appended to a comma-separated X-Forwarded-* header."""
    trusted = get_services().config.console_trusted_proxies
    if trusted <= 0:
        return None
    values = [part.strip() for part in request.headers.get(header, "").split(",") if part.strip()]
    return values[-trusted] if len(values) >= trusted else None


def request_is_https() -> bool:
    """Whether the browser's connection is HTTPS (X-Forwarded-Proto only from trusted proxies)."""
    proto = _forwarded("X-Forwarded-Proto")
    return (proto or request.scheme).lower() == "https"


def client_address() -> str:
    """The browser's address, for rate limiting (X-Forwarded-For only from trusted proxies)."""
    return _forwarded("X-Forwarded-For") or request.remote_addr or "unknown"


class ConsoleSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie session, with Secure decided per request instead of once per app."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return request_is_https()


def configure_app(app: Flask, secret_key: bytes | None) -> None:
    """Session settings for the app (only the console uses the session; the rest never touches it)."""
    if secret_key is not None:
        app.secret_key = secret_key
    app.session_interface = ConsoleSessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME=SESSION_COOKIE_NAME,
        SESSION_COOKIE_PATH="/console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
    )


def csrf_token() -> str:
    """The session's CSRF token, made on first use (templates put it in every form)."""
    token = session.get(_CSRF_SESSION_KEY)
    if not token:
        token = secrets.token_urlsafe(32)
        session[_CSRF_SESSION_KEY] = token
    return token


def check_csrf() -> None:
    """Refuse a POST without this session's token, or sent from another site's page.

    :raises werkzeug.exceptions.BadRequest: token missing or wrong (400).
    :raises werkzeug.exceptions.Forbidden: Origin names another host (403).
    """
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        host = origin.split("://", 1)[-1]
        if host != request.host:
            abort(403, description="This form was sent from another site's page.")
    expected = session.get(_CSRF_SESSION_KEY)
    presented = request.form.get(CSRF_FIELD, "")
    if not expected or not presented or not hmac.compare_digest(presented.encode(), expected.encode()):
        abort(400, description=_CSRF_REFUSED)


def add_headers(response):
    """Security headers on every console response."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request_is_https():
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response

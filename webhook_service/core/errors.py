"""Typed errors. Each web-facing one carries its HTTP status; web/error_handlers.py renders them."""

from __future__ import annotations

import re


class ConfigError(Exception):
    """Configuration is missing or malformed; the process should stop with this one line."""


class ServiceError(Exception):
    """Base of errors that map to an HTTP status and a stable machine-readable code."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidSignature(ServiceError):
    """The Stripe-Signature header is missing, malformed, wrong or outside the tolerance.

    `reason` labels the rejection in logs and metrics (signature_missing, signature_malformed,
    signature_mismatch, timestamp_outside_tolerance); `timestamp` is the header's `t` when it parsed.
    """

    status_code = 400
    code = "invalid_signature"

    def __init__(self, message: str, *, reason: str = "signature_malformed", timestamp: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.timestamp = timestamp


class InvalidPayload(ServiceError):
    """The body is not a JSON Stripe event. `reason` labels the rejection in logs and metrics."""

    status_code = 400
    code = "invalid_payload"

    def __init__(self, message: str, *, reason: str = "payload_invalid"):
        super().__init__(message)
        self.reason = reason


class BadRequest(ServiceError):
    """A request parameter is invalid."""

    status_code = 400
    code = "bad_request"


class Unauthorized(ServiceError):
    """No valid API key."""

    status_code = 401
    code = "unauthorized"


class NotFound(ServiceError):
    """The named resource does not exist."""

    status_code = 404
    code = "not_found"


class ServiceUnavailable(ServiceError):
    """A dependency (queue or database) is down; the caller should retry later."""

    status_code = 503
    code = "service_unavailable"


class PermanentEventError(Exception):
    """An event that can never be processed as it is (a malformed object); retrying will not help."""


#: The most of an error's first line that operators see (API, CLI, logs, Sentry).
MAX_SUMMARY_LENGTH = 300
#: Where SQLAlchemy starts appending the statement, its parameters, and its help link.
_SQL_MARKERS = ("[SQL:", "[parameters:", "(Background on this error")
#: Values PostgreSQL echoes in a message: a quoted literal after a colon at the end
#: (`invalid input syntax for type integer: "abc"`) or `value "x" is out of range`.
_ECHOED_VALUES = (re.compile(r'(:\s*)"[^"]*"\s*$'), re.compile(r'(\bvalue\s+)"[^"]*"'))


def error_summary(error: BaseException | str) -> str:
    """The error's first line, without SQL text or bound parameter values.

    Takes an exception (rendered as `Type: message`) or text already stored (older
    `last_error` values hold SQLAlchemy's full text). What operators see must never carry
    customer data, and SQLAlchemy appends the statement and its parameters to its messages.
    """
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    line = text.strip().splitlines()[0] if text.strip() else ""
    for marker in _SQL_MARKERS:
        line = line.split(marker, 1)[0]
    for pattern in _ECHOED_VALUES:
        line = pattern.sub(r'\1"…"', line)
    line = line.rstrip()
    if len(line) > MAX_SUMMARY_LENGTH:
        line = line[: MAX_SUMMARY_LENGTH - 1] + "…"
    return line


class StripeAPIError(ServiceError):
    """Stripe's API answered with an error, or kept failing (resync shows it; fetches retry the event)."""

    status_code = 502
    code = "stripe_api_error"


class StripeNotFound(StripeAPIError):
    """Stripe has no such object (any more): a deleted draft, an event past its 30 days."""

    status_code = 404
    code = "stripe_not_found"


class StripeUnavailable(StripeAPIError):
    """A Stripe request kept failing or found no slot in the request budget: transient.

    The event that needed it is retried later by the event retry policy, so the fetch is not lost.
    `retry_after` is how long Stripe (or the budget) asked us to wait, in seconds, when it said;
    `http_status` is Stripe's last answer, when there was one (an operator command tells a refused
    key, 401, from an outage without quoting Stripe's message, which echoes part of the key);
    `stripe_code` and `stripe_param` are its error's (`resource_missing`, `starting_after`), when it said.
    """

    def __init__(
        self,
        message: str,
        retry_after: float | None = None,
        http_status: int | None = None,
        *,
        stripe_code: str | None = None,
        stripe_param: str | None = None,
    ):
        super().__init__(message)
        self.retry_after = retry_after
        self.http_status = http_status
        self.stripe_code, self.stripe_param = stripe_code, stripe_param

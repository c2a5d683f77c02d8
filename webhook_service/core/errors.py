"""Typed errors. Each web-facing one carries its HTTP status; web/error_handlers.py renders them."""

from __future__ import annotations


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
    """The Stripe-Signature header is missing, malformed, wrong or outside the tolerance."""

    status_code = 400
    code = "invalid_signature"


class InvalidPayload(ServiceError):
    """The body is not a JSON Stripe event."""

    status_code = 400
    code = "invalid_payload"


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

"""POST /webhooks/stripe: verify, record durably, wake a drain, answer. Nothing else in the request."""

from __future__ import annotations

import logging
import time

import redis
import sentry_sdk
from flask import Blueprint, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from webhook_service.core.errors import InvalidPayload, InvalidSignature, ServiceUnavailable
from webhook_service.core.signature import verify_signature
from webhook_service.processing import eventlog
from webhook_service.processing.envelope import parse_envelope
from webhook_service.web import rejections
from webhook_service.web.services import get_services

logger = logging.getLogger("webhook_service.receiver")

bp = Blueprint("receiver", __name__)

#: How much of a chunked body is read at a time.
_READ_CHUNK = 64 * 1024


def read_body() -> bytes:
    """The raw body, at most the app's MAX_CONTENT_LENGTH; past it, 413 whether chunked or not.

    With a Content-Length, Werkzeug answers 413 itself. A chunked body has none, and Werkzeug
    would silently cut it at the limit (a signature mismatch, so a 400 for what is too large).
    """
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is not None or not request.environ.get("wsgi.input_terminated"):
        return request.get_data(cache=False)
    stream = request.environ["wsgi.input"]
    chunks: list[bytes] = []
    size = 0
    while size <= limit:  # one byte past the limit is enough to know
        chunk = stream.read(min(_READ_CHUNK, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise RequestEntityTooLarge()
    return b"".join(chunks)


@bp.post("/webhooks/stripe")
def receive_stripe_event():
    """Accept one Stripe event delivery.

    :raises InvalidSignature: 400, nothing recorded.
    :raises InvalidPayload: 400, nothing recorded.
    :raises ServiceUnavailable: 503 when the database or the queue is down, so Stripe retries.
    """
    started = time.perf_counter()
    services = get_services()
    config = services.config
    try:
        body = read_body()
        header = request.headers.get("Stripe-Signature")
        verify_signature(body, header, config.webhook_secrets, config.tolerance)
        envelope = parse_envelope(body, config.accept_mode)
    except (InvalidSignature, InvalidPayload) as exc:
        rejections.note(exc)  # logged and counted, with its reason, as the 4xx goes out
        raise
    sentry_sdk.set_tag("stripe.event_id", envelope.id)
    sentry_sdk.set_tag("stripe.event_type", envelope.type)
    try:
        inserted = services.intake.accept(envelope, body)
    except eventlog.EventLogUnavailable as exc:
        logger.error("database unavailable while recording %s: %s", envelope.id, exc)
        raise ServiceUnavailable("Database unavailable; the event was not recorded. Retry later.") from None
    except redis.RedisError as exc:
        # The event is in the log and recovery will process it, but we promised Stripe a 503
        # whenever the queue is down: its retry then finds the duplicate and gets a 2xx.
        logger.error("queue unavailable after recording %s: %s", envelope.id, type(exc).__name__)
        raise ServiceUnavailable("Queue unavailable; retry later.") from None
    outcome = "duplicate" if not inserted else envelope.status.value
    logger.info(
        "received %s",
        outcome,
        extra={
            "fields": {
                "event_id": envelope.id,
                "type": envelope.type,
                "outcome": outcome,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                **({"reason": envelope.ignored_reason} if envelope.ignored_reason and inserted else {}),
            }
        },
    )
    return {"received": True, "id": envelope.id, "duplicate": not inserted}, 200

"""POST /webhooks/stripe: verify, record durably, wake a drain, answer. Nothing else in the request."""

from __future__ import annotations

import logging
import time

import redis
import sentry_sdk
from flask import Blueprint, request

from webhook_service.core.errors import ServiceUnavailable
from webhook_service.core.signature import verify_signature
from webhook_service.processing import eventlog
from webhook_service.processing.envelope import parse_envelope
from webhook_service.web.services import get_services

logger = logging.getLogger("webhook_service.web.receiver")

bp = Blueprint("receiver", __name__)


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
    body = request.get_data(cache=False)  # raw bytes; Flask answers 413 past MAX_CONTENT_LENGTH
    verify_signature(body, request.headers.get("Stripe-Signature"), config.webhook_secrets, config.tolerance)
    envelope = parse_envelope(body, config.accept_mode)
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

"""Rejected deliveries: every 4xx answer of the receiver is logged and counted by reason.

Logged with the reason, the status and the skew between the signature's timestamp and our
clock (never the body, the header or the error message, which can quote either). Counted in
memory and written to the database by `flush`, which the process's reporter thread runs every
few seconds and /metrics and /readyz run before reading: a flood of forged deliveries then costs
no database write per request, and a 400 never waits for the database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import Flask, Response, current_app, g, request
from sqlalchemy.orm import Session

from webhook_service.core.errors import ServiceError
from webhook_service.core.models import utcnow
from webhook_service.processing import backlog, counters
from webhook_service.processing.db import Database

logger = logging.getLogger("webhook_service.receiver")

RECEIVER_PATH = "/webhooks/stripe"
EXTENSION_KEY = "webhook_service.rejections"
#: Reasons for 4xx answers that no typed error explains (werkzeug's own).
_BY_STATUS = {405: "method_not_allowed", 413: "payload_too_large"}


class RejectionTally:
    """Rejections of this process not yet written to the database (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pending: Counter[str] = Counter()

    def record(self, reason: str) -> None:
        with self._lock:
            self._pending[reason] += 1

    def flush(self, db: Database) -> None:
        """Write pending counts; on a database error keep them for the next flush."""
        with self._lock:
            pending, self._pending = self._pending, Counter()
        if not pending:
            return
        try:
            with db.sessions() as session, session.begin():
                counters.add_rejections(session, pending)
        except sa.exc.SQLAlchemyError as exc:
            with self._lock:
                self._pending.update(pending)
            logger.warning("rejection counts not written yet (%s); kept for the next try", type(exc).__name__)


def note(exc: ServiceError) -> None:
    """Called by the receiver for a typed 4xx on its way out: the hook below logs and counts it."""
    g.rejection = exc


def _on_response(response: Response) -> Response:
    if request.path != RECEIVER_PATH or not 400 <= response.status_code < 500:
        return response
    exc = g.pop("rejection", None)
    reason = getattr(exc, "reason", None) or _BY_STATUS.get(response.status_code, "bad_request")
    fields = {"reason": reason, "status": response.status_code, "method": request.method}
    timestamp = getattr(exc, "timestamp", None)
    if timestamp is not None:
        fields["skew_s"] = int(time.time() - timestamp)  # positive: signed in the past
    if request.content_length is not None:
        fields["body_bytes"] = request.content_length
    logger.warning("delivery rejected: %s", reason, extra={"fields": fields})
    tally().record(reason)
    return response


def tally(app: Flask | None = None) -> RejectionTally:
    """The app's tally of rejections not yet written."""
    return (app or current_app).extensions[EXTENSION_KEY]


def init_app(app: Flask) -> None:
    """Count and log the receiver's 4xx answers, whoever produced them (werkzeug's 405 and 413 too)."""
    app.extensions[EXTENSION_KEY] = RejectionTally()
    app.after_request(_on_response)


#: /readyz reports on signature mismatches over this window.
SIGNATURE_WINDOW = timedelta(minutes=5)


def signature_health(session: Session, secrets_configured: bool, now: datetime | None = None) -> dict:
    """What /readyz says about signatures: do deliveries fail against the configured secrets?

    `mismatch` when deliveries with a well-formed signature matched no secret in the last five
    minutes and none was accepted (a secret rolled in Stripe but not in STRIPE_WEBHOOK_SECRETS);
    `partial_mismatch` when some were accepted too (one of several endpoints, or Connect vs platform).
    """
    now = now or utcnow()
    mismatched = counters.recent_rejections(session, "signature_mismatch", SIGNATURE_WINDOW, now)
    accepted = backlog.received_since(session, now - SIGNATURE_WINDOW, deliveries=True)
    window = f"{int(SIGNATURE_WINDOW.total_seconds() // 60)} min"
    report = {"window": window, "mismatched": mismatched, "accepted": accepted}
    if not secrets_configured:
        report.update(status="no_secrets", message="STRIPE_WEBHOOK_SECRETS is empty: nothing verifies.")
    elif not mismatched:
        report["status"] = "ok"
    elif not accepted:
        report.update(
            status="mismatch",
            message=(
                f"{mismatched} deliveries in the last {window} were signed with a secret that is not in "
                "STRIPE_WEBHOOK_SECRETS, and none was accepted: was the endpoint's secret rolled? "
                'See docs/operations.md, "Rolling the webhook secret".'
            ),
        )
    else:
        report.update(
            status="partial_mismatch",
            message=(
                f"{mismatched} deliveries in the last {window} matched no secret in STRIPE_WEBHOOK_SECRETS "
                f"while {accepted} were accepted: is one endpoint's secret missing?"
            ),
        )
    return report

"""One structured log line per event outcome, the format operators grep and ship."""

from __future__ import annotations

import logging

logger = logging.getLogger("webhook_service.events")


def log_outcome(event_id, event_type, outcome, duration_ms, attempt, **extra) -> None:
    """Log `event <outcome>` with the event's id, type, attempt and duration as fields."""
    fields = {"event_id": event_id, "type": event_type, "outcome": outcome, "attempt": attempt}
    if duration_ms is not None:
        fields["duration_ms"] = round(duration_ms, 2)
    fields.update({k: v for k, v in extra.items() if v is not None})
    # A final failure needs a person: it is logged at error level, the rest (retries too) at info.
    level = logging.ERROR if outcome == "failed" else logging.INFO
    logger.log(level, "event %s", outcome, extra={"fields": fields})

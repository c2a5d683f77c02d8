"""Structured logs: one JSON object per line, on stderr so command output on stdout stays clean."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime

from webhook_service.core.errors import error_summary

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line; `extra={"fields": {...}}` adds structured fields."""

    def formatException(self, ei) -> str:  # noqa: N802 - logging's name
        """The traceback's frames and the error's first line: SQLAlchemy's messages carry the
        statement and its parameter values (customer emails, names), which never go in a log."""
        _type, error, tb = ei
        frames = "".join(traceback.format_tb(tb))
        return f"Traceback (most recent call last):\n{frames}{error_summary(error) if error else ''}"

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            data.update(fields)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exc"] = record.exc_text
        return json.dumps(data, default=str)


#: Libraries whose INFO lines are noise for operators (migration context chatter).
QUIET_LOGGERS = ("alembic.runtime.migration",)


def configure_logging(level: str = "INFO") -> None:
    """Send our and RQ's logs to stderr as JSON lines (idempotent)."""
    root = logging.getLogger()
    if any(getattr(h, "_webhook_service", False) for h in root.handlers):
        root.setLevel(level)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._webhook_service = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)

"""Audit: every operator action (console, CLI, scheduler), newest first."""

from __future__ import annotations

from flask import render_template, request

from webhook_service.processing import audit
from webhook_service.web.console.blueprint import bp
from webhook_service.web.console.forms import PAGE_SIZE, FormError, parse_id, parse_time
from webhook_service.web.services import get_services

#: The trail is small (people's actions), so it pages by number; this bounds the offset anyway.
MAX_PAGE = 1000


@bp.get("/audit")
def audit_list():
    error, rows, total = None, [], 0
    page = request.args.get("page", "1")
    page = min(int(page), MAX_PAGE) if page.isdigit() and int(page) > 0 else 1
    filters: dict = {}
    try:
        filters = {
            "action": parse_id(request.args.get("action"), "action"),
            "actor": parse_id(request.args.get("actor"), "actor"),
            "since": parse_time(request.args.get("since"), "since"),
            "until": parse_time(request.args.get("until"), "until"),
        }
    except FormError as exc:
        error = exc
    else:
        rows, total = audit.list_actions(
            get_services().db, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE, **filters
        )
    args = {
        name: (value.isoformat() if hasattr(value, "isoformat") else value)
        for name, value in filters.items()
        if value
    }
    return (
        render_template(
            "console/audit.html",
            rows=rows,
            total=total,
            page=page,
            more=page * PAGE_SIZE < total and page < MAX_PAGE,
            args=args,
            raw=request.args,
            error=error,
        ),
        400 if error else 200,
    )

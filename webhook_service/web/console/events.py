"""Events: the event log with filters, one event, and replay (one, or all matching a filter)."""

from __future__ import annotations

import itertools
import logging

import redis
import sqlalchemy as sa
from flask import abort, flash, redirect, render_template, request, url_for
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.results import Result

import handlers
from webhook_service.core.models import EventStatus, StripeEvent
from webhook_service.processing import replay
from webhook_service.processing.event_filter import EventFilter
from webhook_service.web.console.auth import acting_operator
from webhook_service.web.console.blueprint import bp
from webhook_service.web.console.forms import (
    PAGE_SIZE,
    FormError,
    decode_cursor,
    encode_cursor,
    older_than,
    parse_choices,
    parse_id,
    parse_time,
)
from webhook_service.web.services import get_services

logger = logging.getLogger(__name__)

STATUSES = tuple(status.value for status in EventStatus)
#: The statuses an on-call operator looks at first.
ATTENTION = (EventStatus.FAILED.value, EventStatus.RETRYING.value)
#: One query per (status, type) pair reads each from its own index; past this many pairs the
#: planner gets one query with IN lists instead.
MAX_UNION_MEMBERS = 16
#: Errors are kept whole on the event's page; lists need only the start.
_LIST_ERROR_CHARS = 500
_LIST_COLUMNS = (
    StripeEvent.id,
    StripeEvent.type,
    StripeEvent.status,
    StripeEvent.object_id,
    StripeEvent.received_at,
    StripeEvent.attempts,
    StripeEvent.next_attempt_at,
    sa.func.substr(StripeEvent.last_error, 1, _LIST_ERROR_CHARS).label("last_error"),
    StripeEvent.ignored_reason,
    StripeEvent.livemode,
)


def event_filter_from(args) -> EventFilter:
    """The event filter of a query string or form: repeatable status and type, since/until, object."""
    types = [part for raw in args.getlist("type") for part in raw.replace(",", " ").split()]
    for event_type in types:
        parse_id(event_type, "type")
    since, until = parse_time(args.get("since"), "since"), parse_time(args.get("until"), "until")
    if since and until and since >= until:
        raise FormError("until", "must be later than since")
    return EventFilter(
        statuses=parse_choices(args.getlist("status"), "status", STATUSES),
        types=tuple(dict.fromkeys(types)),
        since=since,
        until=until,
        object_id=parse_id(args.get("object"), "object"),
    )


def filter_args(flt: EventFilter) -> dict:
    """The filter as query-string arguments (for links and hidden form fields)."""
    args: dict = {}
    if flt.statuses:
        args["status"] = list(flt.statuses)
    if flt.types:
        args["type"] = list(flt.types)
    if flt.since:
        args["since"] = flt.since.isoformat()
    if flt.until:
        args["until"] = flt.until.isoformat()
    if flt.object_id:
        args["object"] = flt.object_id
    return args


def list_page(session, flt: EventFilter, cursor=None, limit: int = PAGE_SIZE) -> list:
    """A page of the log, newest first, plus one row to tell whether there is more.

    Each (status, type) pair of the filter is its own ordered, limited query, merged by a
    UNION ALL: every one reads the newest rows of one index, so the page costs the same with
    10,000,000 events as with 10 (an IN list would collect and sort every match first).
    """
    pairs = list(itertools.product(flt.statuses or (None,), flt.types or (None,)))
    single = len(pairs) == 1 or len(pairs) > MAX_UNION_MEMBERS
    members = []
    for status, event_type in [(None, None)] if single else pairs:
        member = (
            flt
            if single
            else EventFilter(
                statuses=(status,) if status else (),
                types=(event_type,) if event_type else (),
                since=flt.since,
                until=flt.until,
                object_id=flt.object_id,
            )
        )
        stmt = member.apply(sa.select(*_LIST_COLUMNS))
        if cursor is not None:
            stmt = stmt.where(older_than(StripeEvent.received_at, StripeEvent.id, cursor))
        members.append(stmt.order_by(StripeEvent.received_at.desc(), StripeEvent.id.desc()).limit(limit + 1))
    if len(members) == 1:
        return list(session.execute(members[0]))
    merged = sa.union_all(*(sa.select(member.subquery()) for member in members)).subquery()
    stmt = sa.select(merged).order_by(merged.c.received_at.desc(), merged.c.id.desc()).limit(limit + 1)
    return list(session.execute(stmt))


@bp.get("/")
def index():
    return redirect(url_for("console.events_list"))


@bp.get("/events")
def events_list():
    """The event log, newest first, with filters; failed and retrying events show why and when next."""
    error = None
    rows, more, flt = [], None, EventFilter()
    try:
        flt = event_filter_from(request.args)
        cursor = decode_cursor(request.args.get("after"))
    except FormError as exc:
        error = exc
    else:
        with get_services().db.sessions() as session:
            rows = list_page(session, flt, cursor)
        if len(rows) > PAGE_SIZE:
            rows = rows[:PAGE_SIZE]
            more = encode_cursor(rows[-1].received_at, rows[-1].id)
    return (
        render_template(
            "console/events/list.html",
            rows=rows,
            more=more,
            flt=flt,
            args=filter_args(flt),
            error=error,
            statuses=STATUSES,
            attention=ATTENTION,
            known_types=sorted(handlers.HANDLED_TYPES),
            page_size=PAGE_SIZE,
        ),
        400 if error else 200,
    )


def _job_details(event_id: str) -> dict | None:
    """What RQ still knows of the event's job (status, the last failure's traceback), if anything."""
    queue = get_services().queue
    try:
        job = Job.fetch(event_id, connection=queue.connection)
        result = job.latest_result()
        return {
            "status": job.get_status(),
            "enqueued_at": job.enqueued_at,
            "ended_at": job.ended_at,
            "retries_left": job.retries_left,
            "traceback": result.exc_string if result and result.type == Result.Type.FAILED else None,
        }
    except NoSuchJobError:
        return None
    except redis.RedisError:
        return {"status": "unknown (Redis is unreachable)"}


def _object_link(object_id: str | None) -> str | None:
    if not object_id:
        return None
    if object_id.startswith("in_"):
        return url_for("console.invoices_show", invoice_id=object_id)
    if object_id.startswith("cus_"):
        return url_for("console.customers_show", customer_id=object_id)
    return None


@bp.get("/events/<event_id>")
def events_show(event_id: str):
    """One event: where it stands, its attempts and errors, its payload, and a replay button."""
    try:
        parse_id(event_id, "event")
    except FormError:
        abort(404)
    with get_services().db.sessions() as session:
        event = session.get(StripeEvent, event_id)
    if event is None:
        abort(404, description=f"No event {event_id} in the event log.")
    return render_template(
        "console/events/show.html",
        event=event,
        job=_job_details(event_id),
        object_link=_object_link(event.object_id),
        replayable=event.status in ATTENTION,
    )


@bp.post("/events/<event_id>/replay")
def events_replay_one(event_id: str):
    """Replay one event through the drain (with `force`, one already processed)."""
    force = request.form.get("force") == "1"
    services = get_services()
    result = replay.replay_ids(
        services.db, services.queue, [event_id], actor=acting_operator().actor, force=force
    )
    if result.queued:
        flash(f"Event {event_id} is queued for replay; this page shows its status.", "ok")
    else:
        why = "; ".join(reason for _id, reason in result.skipped) or "nothing to replay"
        flash(f"Event {event_id} was not replayed: {why}.", "error")
    return redirect(url_for("console.events_show", event_id=event_id))


@bp.get("/events/replay")
def events_replay_confirm():
    """The dry run of a replay by filter: how many events it would replay, and a button to do it."""
    force = request.args.get("force") == "1"
    try:
        flt = event_filter_from(request.args)
    except FormError as exc:
        return render_template("console/events/replay.html", error=exc, flt=None, args={}), 400
    services = get_services()
    count = replay.count_replayable(services.db, flt, force=force)
    with services.db.sessions() as session:
        sample = list_page(session, flt, limit=10)[:10]
    return render_template(
        "console/events/replay.html",
        flt=flt,
        args=filter_args(flt),
        count=count,
        force=force,
        sample=sample,
        error=None,
    )


@bp.post("/events/replay")
def events_replay_matching():
    """Replay every event matching the filter that was shown with its dry-run count."""
    try:
        flt = event_filter_from(request.form)
    except FormError as exc:
        return render_template("console/events/replay.html", error=exc, flt=None, args={}), 400
    force = request.form.get("force") == "1"
    services = get_services()
    result = replay.replay_matching(
        services.db, services.queue, flt, actor=acting_operator().actor, force=force
    )
    expected = request.form.get("expected", "")
    message = f"{len(result.queued)} event(s) queued for replay"
    if expected.isdigit() and int(expected) != len(result.queued):
        message += f" (the dry run counted {int(expected)}; the log changed in between)"
    if result.skipped:
        message += f"; {len(result.skipped)} skipped"
    flash(message + ".", "ok")
    return redirect(url_for("console.events_list", **filter_args(flt)))

"""Invoices: the billing admins' list, past-due triage, and one invoice with everything behind it."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import abort, render_template, request
from sqlalchemy.orm import selectinload

from webhook_service.core.models import (
    CreditNote,
    Customer,
    Invoice,
    InvoiceStatus,
    Notification,
    StripeEvent,
    utcnow,
)
from webhook_service.core.sql import starts_with
from webhook_service.web.console.blueprint import bp
from webhook_service.web.console.forms import (
    PAGE_SIZE,
    FormError,
    decode_cursor,
    decode_text_cursor,
    encode_cursor,
    later_than,
    older_than,
    parse_choice,
    parse_id,
    parse_time,
)
from webhook_service.web.services import get_services

STATUSES = tuple(status.value for status in InvoiceStatus)
#: Line categories in the order the invoice page shows them (tax follows, from the invoice).
CATEGORIES = (("usage", "Usage"), ("fixed_fee", "Fixed fees"), ("adjustment", "Adjustments"))
_LIST_COLUMNS = (
    Invoice.id,
    Invoice.number,
    Invoice.status,
    Invoice.customer_id,
    Invoice.currency,
    Invoice.total,
    Invoice.amount_remaining,
    Invoice.issued_at,
    Invoice.due_date,
    Invoice.created_at,
    Invoice.livemode,
)


def customers_by_id(session, ids) -> dict[str, Customer]:
    """The customers of a page's rows, in one primary-key lookup (never a join over the table)."""
    wanted = {customer_id for customer_id in ids if customer_id}
    if not wanted:
        return {}
    return {c.id: c for c in session.scalars(sa.select(Customer).where(Customer.id.in_(wanted)))}


def _invoice_filters(args) -> dict[str, Any]:
    filters: dict[str, Any] = {
        "q": (args.get("q") or "").strip()[:255] or None,
        "status": parse_choice(args.get("status"), "status", STATUSES),
        "entity": parse_id(args.get("entity"), "entity"),
        "customer": parse_id(args.get("customer"), "customer"),
        "issued_from": parse_time(args.get("issued_from"), "issued_from"),
        "issued_to": parse_time(args.get("issued_to"), "issued_to"),
    }
    if filters["issued_from"] and filters["issued_to"] and filters["issued_from"] >= filters["issued_to"]:
        raise FormError("issued_to", "must be later than issued from")
    return filters


def sort_key(filters: dict) -> str:
    """What the list is ordered by, chosen so an index yields the rows in order.

    A number search lists numbers from the highest down (the prefix index gives them in order; by
    creation time PostgreSQL would walk the whole list to find old numbers); an issue-date range
    lists by issue date; anything else newest first by Stripe's creation time.
    """
    if filters.get("q"):
        return "number"
    if filters.get("issued_from") or filters.get("issued_to"):
        return "issued_at"
    return "created_at"


def _number_order(session, cursor):
    """ORDER BY number descending in byte order, and the keyset condition, per dialect.

    On PostgreSQL through the `varchar_pattern_ops` operators (~<~), the order of the prefix index;
    SQLite compares text bytewise anyway.
    """
    if session.get_bind().dialect.name != "postgresql":
        order = Invoice.number.desc()
        cond = older_than(Invoice.number, Invoice.id, cursor) if cursor else None
        return order, cond
    order = sa.literal_column(f"{Invoice.__table__.name}.number USING ~>~")
    cond = None
    if cursor:
        number, row_id = cursor
        cond = sa.and_(
            Invoice.number.op("~<=~")(number),
            sa.or_(Invoice.number.op("~<~")(number), Invoice.id < row_id),
        )
    return order, cond


def invoice_page(session, filters: dict, cursor=None, limit: int = PAGE_SIZE) -> list:
    """A page of invoices, newest first, with the filters, plus one row to tell whether there is more."""
    # A placeholder row (a payment that came before its invoice) is no invoice yet, as in the API.
    stmt = sa.select(*_LIST_COLUMNS).where(Invoice.deleted_at.is_(None), Invoice.described)
    if filters.get("status"):
        stmt = stmt.where(Invoice.status == filters["status"])
    if filters.get("customer"):
        stmt = stmt.where(Invoice.customer_id == filters["customer"])
    if filters.get("entity"):
        entity_customers = sa.select(Customer.id).where(Customer.entity_id == filters["entity"])
        stmt = stmt.where(Invoice.customer_id.in_(entity_customers))
    if filters.get("issued_from"):
        stmt = stmt.where(Invoice.issued_at >= filters["issued_from"])
    if filters.get("issued_to"):
        stmt = stmt.where(Invoice.issued_at < filters["issued_to"])
    if filters.get("q"):
        stmt = stmt.where(starts_with(Invoice.number, filters["q"], session.get_bind().dialect.name))
    key = sort_key(filters)
    if key == "number":
        order, after = _number_order(session, cursor)
    else:
        column = getattr(Invoice, key)
        order = column.desc()
        after = older_than(column, Invoice.id, cursor) if cursor is not None else None
    if after is not None:
        stmt = stmt.where(after)
    stmt = stmt.order_by(order, Invoice.id.desc()).limit(limit + 1)
    return list(session.execute(stmt))


def _query_args(filters: dict) -> dict:
    shown = {}
    for name, value in filters.items():
        if value is None:
            continue
        shown[name] = value.date().isoformat() if hasattr(value, "date") else value
    return shown


@bp.get("/invoices")
def invoices_list():
    """The invoice list: number, billable entity, issue date, total, status; search and filters."""
    error, rows, more, customers, filters = None, [], None, {}, {}
    try:
        filters = _invoice_filters(request.args)
        decode = decode_text_cursor if sort_key(filters) == "number" else decode_cursor
        cursor = decode(request.args.get("after"))
    except FormError as exc:
        error = exc
    else:
        with get_services().db.sessions() as session:
            rows = invoice_page(session, filters, cursor)
            if len(rows) > PAGE_SIZE:
                rows = rows[:PAGE_SIZE]
                more = encode_cursor(getattr(rows[-1], sort_key(filters)), rows[-1].id)
            customers = customers_by_id(session, [row.customer_id for row in rows])
    return (
        render_template(
            "console/invoices/list.html",
            rows=rows,
            more=more,
            customers=customers,
            filters=filters,
            args=_query_args(filters),
            raw=request.args,
            statuses=STATUSES,
            order=sort_key(filters),
            error=error,
        ),
        400 if error else 200,
    )


@bp.get("/invoices/past-due")
def invoices_past_due():
    """Past-due invoices to triage, longest overdue first, with the notifications already written."""
    error, rows, more, customers, notified = None, [], None, {}, {}
    try:
        cursor = decode_cursor(request.args.get("after"))
    except FormError as exc:
        error, cursor = exc, None
    if error is None:
        with get_services().db.sessions() as session:
            stmt = sa.select(*_LIST_COLUMNS).where(
                Invoice.status == InvoiceStatus.PAST_DUE.value, Invoice.deleted_at.is_(None)
            )
            if cursor is not None:
                stmt = stmt.where(later_than(Invoice.due_date, Invoice.id, cursor))
            rows = list(session.execute(stmt.order_by(Invoice.due_date, Invoice.id).limit(PAGE_SIZE + 1)))
            if len(rows) > PAGE_SIZE:
                rows = rows[:PAGE_SIZE]
                more = encode_cursor(rows[-1].due_date, rows[-1].id)
            customers = customers_by_id(session, [row.customer_id for row in rows])
            ids = [row.id for row in rows]
            for invoice_id, audience in session.execute(
                sa.select(Notification.invoice_id, Notification.audience).where(
                    Notification.invoice_id.in_(ids)
                )
            ):
                notified.setdefault(invoice_id, []).append(audience)
    return (
        render_template(
            "console/invoices/past_due.html",
            rows=rows,
            more=more,
            customers=customers,
            notified=notified,
            now=utcnow(),
            error=error,
        ),
        400 if error else 200,
    )


def line_groups(invoice: Invoice) -> list[dict]:
    """The invoice's lines by category, each group with its sum, in the order of CATEGORIES."""
    groups = []
    for category, label in CATEGORIES:
        lines = [line for line in invoice.lines if line.category == category]
        groups.append(
            {"category": category, "label": label, "lines": lines, "sum": sum(line.amount for line in lines)}
        )
    known = {category for category, _label in CATEGORIES}
    other = [line for line in invoice.lines if line.category not in known]
    if other:
        groups.append(
            {"category": "other", "label": "Other", "lines": other, "sum": sum(line.amount for line in other)}
        )
    return groups


@bp.get("/invoices/<invoice_id>")
def invoices_show(invoice_id: str):
    """One invoice: lines by category and tax, status trail, credit notes, links to Stripe's copies."""
    try:
        parse_id(invoice_id, "invoice")
    except FormError:
        abort(404)
    with get_services().db.sessions() as session:
        invoice = session.scalars(
            sa.select(Invoice)
            .where(Invoice.id == invoice_id)
            .options(selectinload(Invoice.lines), selectinload(Invoice.status_history))
        ).first()
        if invoice is None:
            abort(404, description=f"No invoice {invoice_id} in the mirror.")
        if not invoice.described:  # the row a payment left before its invoice arrived
            abort(
                404, description=f"No invoice {invoice_id} in the mirror yet: only a payment for it arrived."
            )
        customer = session.get(Customer, invoice.customer_id) if invoice.customer_id else None
        credit_notes = session.scalars(
            sa.select(CreditNote).where(CreditNote.invoice_id == invoice_id).order_by(CreditNote.created_at)
        ).all()
        notifications = session.scalars(
            sa.select(Notification)
            .where(Notification.invoice_id == invoice_id)
            .order_by(Notification.audience)
        ).all()
        events = session.execute(
            sa.select(StripeEvent.id, StripeEvent.type, StripeEvent.status, StripeEvent.received_at)
            .where(StripeEvent.object_id == invoice_id)
            .order_by(StripeEvent.received_at.desc())
            .limit(20)
        ).all()
    return render_template(
        "console/invoices/show.html",
        invoice=invoice,
        customer=customer,
        groups=line_groups(invoice),
        credit_notes=credit_notes,
        notifications=notifications,
        events=events,
    )

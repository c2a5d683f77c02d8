"""The portal's read-only JSON API under /api/v1, with its OpenAPI document.

Bearer keys from PORTAL_API_KEYS, compared in constant time. List endpoints filter and sort on
indexed columns and page with LIMIT/OFFSET, so no request loads a whole table.
"""

from __future__ import annotations

import hmac

import sqlalchemy as sa
from flask import request
from flask_smorest import Api, Blueprint
from marshmallow import RAISE
from sqlalchemy.orm import Session, selectinload
from webargs.flaskparser import FlaskParser

from webhook_service.core.errors import NotFound, Unauthorized
from webhook_service.core.models import CreditNote, Customer, Invoice, Notification, StripeEvent
from webhook_service.core.sql import starts_with
from webhook_service.processing import audit
from webhook_service.web.schemas import (
    PLATFORM,
    AuditArgs,
    AuditPageSchema,
    CustomerArgs,
    CustomerDetailSchema,
    CustomerPageSchema,
    ErrorSchema,
    EventArgs,
    EventDetailSchema,
    EventPageSchema,
    InvoiceArgs,
    InvoiceDetailSchema,
    InvoicePageSchema,
    NoArgs,
    NotificationArgs,
    NotificationPageSchema,
)
from webhook_service.web.services import get_services

PREFIX = "/api/v1"


class _Parser(FlaskParser):
    """Bad filters are the client's mistake: 400, not webargs' default 422; an unknown one too.

    A misspelled or unsupported filter (`?livemod=true`) would otherwise be dropped, and the
    answer would silently cover more than was asked for.
    """

    DEFAULT_VALIDATION_STATUS = 400
    DEFAULT_UNKNOWN_BY_LOCATION = {**FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION, "query": RAISE}


class _Blueprint(Blueprint):
    ARGUMENTS_PARSER = _Parser()


class _Api(Api):
    """Errors are documented with the body they have (`{"error", "message"}`, error_handlers.py)."""

    ERROR_SCHEMA = ErrorSchema


bp = _Blueprint("api", __name__, url_prefix=PREFIX, description="Read-only portal API")


def init_app(app) -> Api:
    """Register the API and its OpenAPI document (/api/v1/openapi.json)."""
    app.config.update(
        API_TITLE="webhook-service portal API",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX=PREFIX,
        OPENAPI_JSON_PATH="openapi.json",
    )
    api = _Api(
        app,
        spec_kwargs={
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearer": []}],
        },
    )
    api.register_blueprint(bp)
    return api


@bp.before_request
def _require_key():
    keys = get_services().config.portal_api_keys
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if not keys:
        raise Unauthorized("The read API is disabled: set PORTAL_API_KEYS.")
    if scheme.lower() != "bearer" or not presented:
        raise Unauthorized("Send Authorization: Bearer <key>.")
    matched = False
    for key in keys:  # every key is compared; the time does not depend on which one matched
        matched |= hmac.compare_digest(presented.encode(), key.encode())
    if not matched:
        raise Unauthorized("Unknown API key.")


def _printable_id(value: str, what: str) -> str:
    """Ids with control characters cannot exist (and PostgreSQL refuses NUL): 404 before the query."""
    if len(value) > 255 or any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise NotFound(f"No {what} {value!r}.")
    return value


def _scoped(stmt, model, args: dict):
    """Apply the `livemode` and `account` filters every list of mirrored objects has."""
    if "livemode" in args:
        stmt = stmt.where(model.livemode.is_(args["livemode"]))
    if "account" in args:
        account = None if args["account"] == PLATFORM else args["account"]
        stmt = stmt.where(model.account.is_(None) if account is None else model.account == account)
    return stmt


def _page(session: Session, stmt, args: dict, order_by) -> dict:
    total = session.scalar(sa.select(sa.func.count()).select_from(stmt.order_by(None).subquery()))
    offset = (args["page"] - 1) * args["per_page"]
    items = session.scalars(stmt.order_by(*order_by).limit(args["per_page"]).offset(offset)).all()
    return {"items": items, "total": total, "page": args["page"], "per_page": args["per_page"]}


#: Every endpoint answers 401 without a valid key; detail endpoints 404 for an unknown id. Lists
#: and details also answer 400 for a bad or unknown parameter (documented by `arguments`).
_UNAUTHORIZED = {"status_code": 401, "response": "UNAUTHORIZED", "description": "No valid API key"}
_NOT_FOUND = {"status_code": 404, "response": "NOT_FOUND", "description": "No object with this id"}


@bp.get("/invoices")
@bp.arguments(InvoiceArgs, location="query", as_kwargs=False)
@bp.response(200, InvoicePageSchema)
@bp.alt_response(**_UNAUTHORIZED)
def list_invoices(args):
    """Invoices, newest first, filtered by status, customer, entity, issue date and number.

    `issued_from` is inclusive and `issued_to` exclusive; `issued_from` after `issued_to` is a 400
    (an inverted range is a mistake, not an empty answer).
    """
    # Only invoices an invoice snapshot has described (as the detail view): a payment that came
    # before its invoice leaves a placeholder row, not an invoice to show.
    listed = sa.select(Invoice).where(Invoice.deleted_at.is_(None), Invoice.described)
    stmt = _scoped(listed, Invoice, args)
    if "status" in args:
        stmt = stmt.where(Invoice.status == args["status"])
    if "customer" in args:
        stmt = stmt.where(Invoice.customer_id == args["customer"])
    if "entity" in args:
        stmt = stmt.where(
            Invoice.customer_id.in_(sa.select(Customer.id).where(Customer.entity_id == args["entity"]))
        )
    if "issued_from" in args:
        stmt = stmt.where(Invoice.issued_at >= args["issued_from"])
    if "issued_to" in args:
        stmt = stmt.where(Invoice.issued_at < args["issued_to"])
    with get_services().db.sessions() as session:
        if "q" in args:  # a prefix the number index answers (see core/sql.py)
            stmt = stmt.where(starts_with(Invoice.number, args["q"], session.get_bind().dialect.name))
        return _page(session, stmt, args, (Invoice.created_at.desc(), Invoice.id.desc()))


@bp.get("/invoices/<invoice_id>")
@bp.arguments(NoArgs, location="query", as_kwargs=True)
@bp.response(200, InvoiceDetailSchema)
@bp.alt_response(**_UNAUTHORIZED)
@bp.alt_response(**_NOT_FOUND)
def get_invoice(invoice_id: str):
    """One invoice with its categorized lines, status history in order, and credit notes."""
    _printable_id(invoice_id, "invoice")
    with get_services().db.sessions() as session:
        invoice = session.scalars(
            sa.select(Invoice)
            .where(Invoice.id == invoice_id, Invoice.described)
            .options(selectinload(Invoice.lines), selectinload(Invoice.status_history))
        ).first()
        if invoice is None:
            raise NotFound(f"No invoice {invoice_id!r}.")
        invoice.credit_notes = session.scalars(  # type: ignore[attr-defined]  # for the schema
            sa.select(CreditNote).where(CreditNote.invoice_id == invoice_id).order_by(CreditNote.created_at)
        ).all()
        return invoice


@bp.get("/customers")
@bp.arguments(CustomerArgs, location="query", as_kwargs=False)
@bp.response(200, CustomerPageSchema)
@bp.alt_response(**_UNAUTHORIZED)
def list_customers(args):
    """Customers (billable entities), newest first, by entity and by name or email prefix.

    `q` matches the start of the name or of the email, ignoring case. Items carry the credit
    balances but not the ledger (one customer's ledger is at /customers/{id}).
    """
    stmt = _scoped(sa.select(Customer).options(selectinload(Customer.balances)), Customer, args)
    if "entity" in args:
        stmt = stmt.where(Customer.entity_id == args["entity"])
    with get_services().db.sessions() as session:
        if "q" in args:  # prefixes the lower() indexes answer (see core/sql.py)
            prefix, dialect = args["q"].lower(), session.get_bind().dialect.name
            stmt = stmt.where(
                sa.or_(
                    starts_with(sa.func.lower(Customer.name), prefix, dialect),
                    starts_with(sa.func.lower(Customer.email), prefix, dialect),
                )
            )
        return _page(session, stmt, args, (Customer.created_at.desc(), Customer.id.desc()))


@bp.get("/customers/<customer_id>")
@bp.arguments(NoArgs, location="query", as_kwargs=True)
@bp.response(200, CustomerDetailSchema)
@bp.alt_response(**_UNAUTHORIZED)
@bp.alt_response(**_NOT_FOUND)
def get_customer(customer_id: str):
    """One customer with its billable entity, credit balance and credit ledger."""
    _printable_id(customer_id, "customer")
    with get_services().db.sessions() as session:
        customer = session.scalars(
            sa.select(Customer)
            .where(Customer.id == customer_id)
            .options(selectinload(Customer.ledger), selectinload(Customer.balances))
        ).first()
        if customer is None:
            raise NotFound(f"No customer {customer_id!r}.")
        return customer


@bp.get("/notifications")
@bp.arguments(NotificationArgs, location="query", as_kwargs=False)
@bp.response(200, NotificationPageSchema)
@bp.alt_response(**_UNAUTHORIZED)
def list_notifications(args):
    """Past-due notifications, newest first, filtered by invoice, customer and audience."""
    stmt = _scoped(sa.select(Notification), Notification, args)
    if "invoice" in args:
        stmt = stmt.where(Notification.invoice_id == args["invoice"])
    if "customer" in args:
        stmt = stmt.where(Notification.customer_id == args["customer"])
    if "audience" in args:
        stmt = stmt.where(Notification.audience == args["audience"])
    with get_services().db.sessions() as session:
        return _page(session, stmt, args, (Notification.created_at.desc(), Notification.id.desc()))


@bp.get("/events")
@bp.arguments(EventArgs, location="query", as_kwargs=False)
@bp.response(200, EventPageSchema)
@bp.alt_response(**_UNAUTHORIZED)
def list_events(args):
    """The event log for operators, newest first (payloads stay in the database and the CLI)."""
    stmt = _scoped(sa.select(StripeEvent), StripeEvent, args)
    if "status" in args:
        stmt = stmt.where(StripeEvent.status == args["status"])
    if "type" in args:
        stmt = stmt.where(StripeEvent.type == args["type"])
    if "since" in args:
        stmt = stmt.where(StripeEvent.received_at >= args["since"])
    with get_services().db.sessions() as session:
        return _page(session, stmt, args, (StripeEvent.received_at.desc(), StripeEvent.id.desc()))


@bp.get("/events/<event_id>")
@bp.arguments(NoArgs, location="query", as_kwargs=True)
@bp.response(200, EventDetailSchema)
@bp.alt_response(**_UNAUTHORIZED)
@bp.alt_response(**_NOT_FOUND)
def get_event(event_id: str):
    """One logged event: status, attempts, next attempt and its last error's first line.

    The payload is not served (it holds customer data; `webhook-service events show` prints it).
    """
    _printable_id(event_id, "event")
    with get_services().db.sessions() as session:
        event = session.get(StripeEvent, event_id)
        if event is None:
            raise NotFound(f"No event {event_id!r}.")
        return event


@bp.get("/audit")
@bp.arguments(AuditArgs, location="query", as_kwargs=False)
@bp.response(200, AuditPageSchema)
@bp.alt_response(**_UNAUTHORIZED)
def list_audit(args):
    """Operator actions (replay, resync, pause, resume, prune, console actions), newest first."""
    rows, total = audit.list_actions(
        get_services().db,
        limit=args["per_page"],
        offset=(args["page"] - 1) * args["per_page"],
        action=args.get("action"),
        actor=args.get("actor"),
        since=args.get("since"),
        until=args.get("until"),
    )
    return {"items": rows, "total": total, "page": args["page"], "per_page": args["per_page"]}

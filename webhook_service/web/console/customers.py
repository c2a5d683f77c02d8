"""Customers: billable entity, credit per currency, and the ledger of what changed it."""

from __future__ import annotations

import sqlalchemy as sa
from flask import abort, render_template, request
from sqlalchemy.orm import selectinload

from webhook_service.core.models import CreditLedgerEntry, CreditNote, Customer, Invoice
from webhook_service.core.sql import starts_with
from webhook_service.web.console.blueprint import bp
from webhook_service.web.console.forms import PAGE_SIZE, FormError, parse_id
from webhook_service.web.services import get_services

#: The customer page lists this many of the newest invoices (the invoice list has the rest).
RECENT_INVOICES = 20


@bp.get("/customers")
def customers_list():
    """Customers by id, searchable by name or email prefix and by billable entity."""
    error, rows, more = None, [], None
    q = (request.args.get("q") or "").strip()[:255]
    try:
        entity = parse_id(request.args.get("entity"), "entity")
        after = parse_id(request.args.get("after"), "after")
    except FormError as exc:
        error, entity, after = exc, None, None
    if error is None:
        stmt = sa.select(Customer)
        with get_services().db.sessions() as session:
            if q:
                dialect = session.get_bind().dialect.name
                # Ignoring case, as the read API does, on the lower() indexes of migration 0012.
                folded = q.lower()
                stmt = stmt.where(
                    starts_with(sa.func.lower(Customer.name), folded, dialect)
                    | starts_with(sa.func.lower(Customer.email), folded, dialect)
                )
            if entity:
                stmt = stmt.where(Customer.entity_id == entity)
            if after:
                stmt = stmt.where(Customer.id > after)
            rows = list(session.scalars(stmt.order_by(Customer.id).limit(PAGE_SIZE + 1)))
        if len(rows) > PAGE_SIZE:
            rows = rows[:PAGE_SIZE]
            more = rows[-1].id
    args = {name: value for name, value in (("q", q), ("entity", entity)) if value}
    return (
        render_template("console/customers/list.html", rows=rows, more=more, q=q, entity=entity, args=args,
                        error=error),
        400 if error else 200,
    )  # fmt: skip


def credit_by_currency(customer: Customer) -> list[tuple[str, int]]:
    """Credit available per currency, as the mirror keeps it (`customer_balances`, one row per
    currency, as Stripe keeps one balance per currency); never summed across currencies.

    A customer with no balance row yet shows its single figure, in its currency if known."""
    balances = customer.credit_balances
    if not balances:
        return [((customer.currency or "").lower(), customer.credit_balance)]
    return sorted((code.lower(), amount) for code, amount in balances.items())


@bp.get("/customers/<customer_id>")
def customers_show(customer_id: str):
    """One customer: billable entity, credit per currency, the ledger, recent invoices and credit notes."""
    try:
        parse_id(customer_id, "customer")
    except FormError:
        abort(404)
    with get_services().db.sessions() as session:
        customer = session.get(Customer, customer_id, options=[selectinload(Customer.balances)])
        if customer is None:
            abort(404, description=f"No customer {customer_id} in the mirror.")
        ledger = list(
            session.scalars(
                sa.select(CreditLedgerEntry)
                .where(CreditLedgerEntry.customer_id == customer_id)
                .order_by(CreditLedgerEntry.effective_at.desc(), CreditLedgerEntry.id.desc())
            )
        )
        invoices = session.execute(
            sa.select(Invoice.id, Invoice.number, Invoice.status, Invoice.total, Invoice.currency,
                      Invoice.issued_at, Invoice.created_at)
            .where(Invoice.customer_id == customer_id, Invoice.deleted_at.is_(None))
            .order_by(Invoice.created_at.desc())
            .limit(RECENT_INVOICES)
        ).all()  # fmt: skip
        credit_notes = session.scalars(
            sa.select(CreditNote)
            .where(CreditNote.customer_id == customer_id)
            .order_by(CreditNote.created_at.desc())
            .limit(RECENT_INVOICES)
        ).all()
    return render_template(
        "console/customers/show.html",
        customer=customer,
        credit=credit_by_currency(customer),
        ledger=ledger,
        invoices=invoices,
        credit_notes=credit_notes,
        recent=RECENT_INVOICES,
    )

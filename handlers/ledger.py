"""The credit ledger: why each customer's credit balance is what it is.

Amounts are in portal sign (positive adds credit). Each explained row is a pure function of the
newest snapshot of one Stripe object (a credit note, an invoice), keyed by (kind, object), so
duplicates, replays and two events describing one change can never add a second row. Stripe
sends no event for a balance transaction itself, so manual adjustments (and any balance from
before this service started) are the residual: Stripe's balance minus what the other rows
explain. Ledger and balance therefore always agree, in any delivery order.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from webhook_service.core.models import CreditLedgerEntry, Customer, LedgerKind

Desired = dict[str, tuple[int, str | None, datetime | None]]  # kind → (amount, currency, effective_at)


def sync_source(
    session: Session, customer_id: str, source_type: str, source_id: str, desired: Desired
) -> None:
    """Make the customer's rows for one source object exactly `desired`, then reconcile."""
    customer = session.get(Customer, customer_id)
    if customer is None:
        return
    current = {
        e.kind: e for e in customer.ledger if e.source_type == source_type and e.source_id == source_id
    }
    for kind, (amount, currency, effective_at) in desired.items():
        entry = current.pop(kind, None)
        if entry is None:
            customer.ledger.append(
                CreditLedgerEntry(
                    kind=kind,
                    amount=amount,
                    currency=currency,
                    source_type=source_type,
                    source_id=source_id,
                    effective_at=effective_at,
                )  # fmt: skip
            )
        elif (entry.amount, entry.currency, entry.effective_at) != (amount, currency, effective_at):
            entry.amount, entry.currency, entry.effective_at = amount, currency, effective_at
    for stale in current.values():
        customer.ledger.remove(stale)
    reconcile(customer)


def reconcile(customer: Customer) -> None:
    """Set the credit balance, and the adjustment row that makes the ledger add up to it."""
    explained = sum(e.amount for e in customer.ledger if e.kind != LedgerKind.ADJUSTMENT.value)
    adjustment = next((e for e in customer.ledger if e.kind == LedgerKind.ADJUSTMENT.value), None)
    if customer.balance is None:  # no customer snapshot yet: the explained rows are all we know
        customer.credit_balance = explained
        residual = 0
    else:
        customer.credit_balance = -customer.balance
        residual = customer.credit_balance - explained
    if residual == 0:
        if adjustment is not None:
            customer.ledger.remove(adjustment)
        return
    if adjustment is None:
        customer.ledger.append(
            CreditLedgerEntry(
                kind=LedgerKind.ADJUSTMENT.value,
                amount=residual,
                currency=customer.currency,
                source_type="customer",
                source_id=customer.id,
                effective_at=None,
            )  # fmt: skip
        )
    elif adjustment.amount != residual or adjustment.currency != customer.currency:
        adjustment.amount, adjustment.currency = residual, customer.currency

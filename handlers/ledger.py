"""The credit ledger: why each customer's credit balance in each currency is what it is.

Amounts are in portal sign (positive adds credit). Each explained row is a pure function of the
newest snapshot of one Stripe object (a credit note, an invoice), keyed by (kind, object), so
duplicates, replays and two events describing one change can never add a second row. Stripe
sends no event for a balance transaction itself, so manual adjustments (and any balance from
before this service started) are the residual: Stripe's balance minus what the other rows
explain. Ledger and balance therefore always agree, in any delivery order.

Everything is per currency: a customer has one balance per currency in Stripe, and an amount in
one currency never explains, offsets or adjusts a balance in another (docs/design.md).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy.orm import Session, object_session

from handlers.scopes import copy_scope, row_scope
from webhook_service.core.models import (
    CreditLedgerEntry,
    CreditNote,
    Customer,
    CustomerBalance,
    LedgerKind,
)

Desired = dict[str, tuple[int, str | None, datetime | None]]  # kind → (amount, currency, effective_at)
ADJUSTMENT = LedgerKind.ADJUSTMENT.value
#: Session flag: an adjustment row was removed and its DELETE is not flushed yet.
_REMOVED_ADJUSTMENT = "ledger_adjustment_removed"


def sync_source(
    session: Session,
    customer_id: str,
    source_type: str,
    source_id: str,
    desired: Desired,
    estimates: Mapping[str, int] | None = None,
) -> None:
    """Make the customer's rows for one source object exactly `desired`, then reconcile.

    :param estimates: kind → upper bound, for rows whose amount the payload does not give
        (`CreditLedgerEntry.at_most`); reconcile settles them against the reported balance.
    """
    estimates = estimates or {}
    customer = session.get(Customer, customer_id)
    if customer is None:
        return
    current = {
        e.kind: e for e in customer.ledger if e.source_type == source_type and e.source_id == source_id
    }
    for kind, (amount, currency, effective_at) in desired.items():
        currency = currency or customer.currency
        entry = current.pop(kind, None)
        at_most = estimates.get(kind)
        if entry is None:
            customer.ledger.append(
                CreditLedgerEntry(
                    kind=kind,
                    amount=amount,
                    currency=currency,
                    source_type=source_type,
                    source_id=source_id,
                    effective_at=effective_at,
                    at_most=at_most,
                )  # fmt: skip
            )
        elif (entry.amount, entry.currency, entry.effective_at, entry.at_most) != (
            amount if at_most is None else entry.amount,
            currency,
            effective_at,
            at_most,
        ):
            entry.currency, entry.effective_at, entry.at_most = currency, effective_at, at_most
            if at_most is None:
                entry.amount = amount
    for stale in current.values():
        customer.ledger.remove(stale)
    reconcile(customer)


def set_reported(customer: Customer, reported: Mapping[str, int] | None) -> None:
    """Record Stripe's credit in other currencies than the customer's own, then reconcile.

    :param reported: currency → credit available (portal sign), the newest customer snapshot's
        `invoice_credit_balance`. Stripe's map lists every currency with a balance, so one it
        leaves out holds none (0). None (a snapshot without the map: every webhook) says nothing,
        and each other currency's balance is then what the ledger explains. The customer's own
        currency always follows `customer.balance` (a snapshot's, or an invoice's newer
        observation of it).
    """
    others = {
        currency: amount for currency, amount in (reported or {}).items() if currency != customer.currency
    }
    unlisted = None if reported is None else 0
    customer.credit_map_complete = reported is not None
    balances = {balance.currency: balance for balance in customer.balances}
    for currency, balance in balances.items():
        if currency != customer.currency and balance.reported != (stated := others.get(currency, unlisted)):
            balance.reported = stated
    for currency in sorted(set(others) - set(balances)):
        customer.balances.append(
            CustomerBalance(currency=currency, reported=others[currency], credit_balance=0)
        )
    reconcile(customer)


def reconcile(customer: Customer) -> None:
    """Set each currency's balance, and the adjustment row that makes that currency's ledger add up.

    A currency Stripe reported keeps Stripe's figure, and the residual becomes its adjustment row;
    a currency it did not report is the sum of its explained rows. `customers.credit_balance` is
    the figure of the customer's own currency.
    """
    scope = row_scope(customer)
    explained: dict[str, int] = defaultdict(int)
    estimated: dict[str, list[CreditLedgerEntry]] = defaultdict(list)
    adjustments: dict[str | None, CreditLedgerEntry] = {}
    for entry in customer.ledger:
        copy_scope(entry, scope)
        if entry.kind == ADJUSTMENT:
            adjustments[entry.currency] = entry
        elif currency := entry.currency or customer.currency:
            if entry.at_most is None:
                explained[currency] += entry.amount
            else:
                explained[currency] += entry.at_most
                estimated[currency].append(entry)
    balances = {balance.currency: balance for balance in customer.balances}
    own = customer.currency
    if own:
        own_reported = None if customer.balance is None else -customer.balance
        if own not in balances and own_reported is not None:
            balances[own] = CustomerBalance(currency=own, credit_balance=0)
            customer.balances.append(balances[own])
        if own in balances and balances[own].reported != own_reported:
            balances[own].reported = own_reported
    for currency in sorted(set(explained) | set(balances)):
        balance = balances.get(currency)
        if balance is None:
            balance = balances[currency] = CustomerBalance(currency=currency, credit_balance=0)
            customer.balances.append(balance)
        if balance.reported is None and currency not in explained:
            customer.balances.remove(balance)  # nothing says the customer has this currency any more
            del balances[currency]
            continue
        copy_scope(balance, scope)
        stated = balance.reported
        if stated is None and customer.credit_map_complete and currency != own:
            stated = 0  # learnt of after the map that left it out (an older event arriving late)
        credit = explained[currency] if stated is None else stated
        if balance.credit_balance != credit:
            balance.credit_balance = credit
        residual = _settle_estimates(customer, estimated.pop(currency, []), credit - explained[currency])
        _set_adjustment(customer, adjustments.pop(currency, None), currency, residual)
    for stale in adjustments.values():  # a currency no longer held, or a row from before migration 0012
        _remove_adjustment(customer, stale)
    customer.credit_balance = _own_credit(customer, balances)


def _settle_estimates(customer: Customer, entries: list[CreditLedgerEntry], residual: int) -> int:
    """Take a shortfall of the reported balance from rows known only by their bound; return what
    is left for the adjustment row.

    A pre-basil note that refunds and credits the balance is first counted as all credit. When the
    balance Stripe reports is lower than that explains, the difference went to the refund, not to a
    manual debit: the note's credit is lowered by it (never below 0), in source order, so the result
    depends on the rows, not on the order events came in. With an API key the worker fetches the
    balance transaction and no row is estimated.
    """
    shortfall = max(0, -residual)
    session = object_session(customer)
    for entry in sorted(entries, key=lambda e: e.source_id):
        bound = entry.at_most or 0
        taken = min(shortfall, bound)
        shortfall -= taken
        if entry.amount != bound - taken:
            entry.amount = bound - taken
        note = session.get(CreditNote, entry.source_id) if session is not None else None
        if note is not None and (note.credited_to_balance, note.refunded_amount) != (entry.amount, taken):
            note.credited_to_balance, note.refunded_amount = entry.amount, taken  # the same split
    return -shortfall if residual < 0 else residual


def _set_adjustment(
    customer: Customer, entry: CreditLedgerEntry | None, currency: str, residual: int
) -> None:
    if residual == 0:
        if entry is not None:
            _remove_adjustment(customer, entry)
        return
    if entry is None:
        # An adjustment of this currency removed earlier in this transaction must be gone first:
        # the unit of work emits INSERTs before DELETEs, and the unique key would refuse the new row.
        session = object_session(customer)
        if session is not None and session.info.pop(_REMOVED_ADJUSTMENT, False):
            session.flush()
        customer.ledger.append(
            CreditLedgerEntry(
                kind=ADJUSTMENT,
                amount=residual,
                currency=currency,
                source_type="customer",
                source_id=customer.id,
                effective_at=None,
                livemode=customer.livemode,
                account=customer.account,
            )  # fmt: skip
        )
    elif entry.amount != residual:
        entry.amount = residual


def _remove_adjustment(customer: Customer, entry: CreditLedgerEntry) -> None:
    customer.ledger.remove(entry)
    session = object_session(customer)
    if session is not None:
        session.info[_REMOVED_ADJUSTMENT] = True


def _own_credit(customer: Customer, balances: dict[str, CustomerBalance]) -> int:
    """The credit in the customer's own currency (the API's `credit_balance`)."""
    own = customer.currency
    if own is None and len(balances) == 1:
        own = next(iter(balances))
    if own in balances:
        return balances[own].credit_balance
    if own is None and customer.balance is not None:
        return -customer.balance  # a balance with no currency on record: Stripe's figure as it is
    return 0

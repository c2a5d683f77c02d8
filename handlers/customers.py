"""customer.* events → the customer row, its billable entity and its credit balance.

Order-free like invoices: the row holds the snapshot with the greatest version key. Customer
events ("1…") outrank the hints invoices carry ("0…"); deletion is sticky, so a late update never
resurrects a deleted customer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from marshmallow import ValidationError
from sqlalchemy.orm import Session

from handlers import ledger, ordering
from handlers.readings.fields import check_text, column_length
from handlers.scopes import Scope, claim, event_scope
from handlers.settings import ENTITY_TYPES, settings_of
from webhook_service.core.errors import PermanentEventError
from webhook_service.core.models import Customer, Invoice
from webhook_service.core.values import is_deletion_stub, required_id

EVENT_TYPES = frozenset({"customer.created", "customer.updated", "customer.deleted"})


@dataclass(frozen=True)
class CustomerHints:
    """What an invoice says about its customer, and how new that is."""

    name: str | None
    email: str | None
    currency: str | None
    livemode: bool
    version_key: str


def related_ids(event: dict) -> dict[str, set[str]]:
    """The rows this event touches, for batch locking."""
    customer_id = event["data"]["object"].get("id")
    return {"customers": {customer_id} if isinstance(customer_id, str) else set()}


def ensure_customer(
    session: Session, customer_id: str, hints: CustomerHints | None = None, scope: Scope | None = None
) -> Customer:
    """Return the customer row, creating it when another object arrives first; newer hints refresh it.

    :param scope: the mode and account of the event that names the customer.
    :raises PermanentEventError: the customer belongs to another mode or account.
    """
    customer = session.get(Customer, customer_id)
    if customer is None:
        customer = Customer(
            id=customer_id,
            version_key="",
            livemode=bool(hints and hints.livemode),
            credit_balance=0,
            entity_type=settings_of(session).default_entity_type,
        )
        session.add(customer)
    if scope is not None:
        claim(customer, "customer", scope, established=bool(customer.version_key or customer.ledger))
    if hints is not None and hints.version_key > (customer.version_key or ""):
        customer.name = hints.name
        customer.email = hints.email
        customer.version_key = hints.version_key
    return customer


def order_prefix(event: dict) -> str:
    """Customer snapshots ("1…") outrank invoice hints ("0…"); then the second observed.

    Same-second snapshots are settled in handlers.ordering, never by the event id.
    """
    return f"1.{ordering.observed_second(event):011d}"


def observe_balance(session: Session, customer_id: str, balance: int, at: int, currency: str | None) -> bool:
    """An invoice's word on the customer's balance at second `at` (its `ending_balance` when it
    applied credit at finalization): newer than the customer's own snapshot, it is what Stripe has.

    Observations merge by time (a customer snapshot wins a tie), so the result is order-free. An
    invoice in another currency than the customer's says nothing about this balance. Returns whether
    the balance changed; the caller reconciles the ledger once (two reconciles in one flush could
    delete and re-insert the same adjustment row, which the unique key refuses).
    """
    customer = session.get(Customer, customer_id)
    if customer is None or (customer.currency and currency and customer.currency != currency):
        return False
    key = f"{at:011d}.0"
    if key <= (customer.balance_observed_key or ""):
        return False
    customer.balance, customer.balance_observed_key = balance, key
    return True


def _apply_snapshot(session: Session, customer: Customer, obj: dict, observed: int) -> None:
    """`balance` was `account_balance` before 2019-10-17; `name` did not exist before 2019, when
    the customer's `description` named it. The values were checked by the customer's reading."""
    balance = snapshot_balance(obj)
    settings = settings_of(session)
    metadata = obj.get("metadata") or {}
    entity_type = str(metadata.get(settings.entity_type_key) or "").strip().lower()
    customer.name = _name_of(obj)
    customer.email = obj.get("email")
    customer.currency = obj.get("currency") or first_invoice_currency(session, customer.id)
    key = f"{observed:011d}.1"
    # A null `balance` (the SDK's schema allows it from 2023-10-16 on) states nothing: the newest
    # observation stays. An invoice may also have seen a newer balance.
    if balance is not None and key >= (customer.balance_observed_key or ""):
        customer.balance, customer.balance_observed_key = balance, key
    customer.entity_type = entity_type if entity_type in ENTITY_TYPES else settings.default_entity_type
    customer.entity_id = _metadata_text(metadata, settings.entity_id_key, Customer.entity_id)
    # `balance` is the one in the customer's currency (ledger.reconcile reads it); the map, when the
    # payload has it, gives every other currency's credit.
    ledger.set_reported(customer, _invoice_credit_balance(obj))


def _name_of(obj: dict) -> str | None:
    """`name`; before 2019, the `description` that stood for it, cut to the column's width:
    Stripe allows 5,000 characters of description, and only a display name is kept from it."""
    if "name" in obj:
        return obj["name"]
    description = obj.get("description")
    width = column_length(Customer.name)
    return description[:width] if isinstance(description, str) and width else description


def _metadata_text(metadata: dict, key: str, column) -> str | None:
    """A metadata value the mirror stores. The reading kept only string values (a boolean, a
    number or a null under the key reads as absent); a value in use is checked like any mirrored
    text, so a NUL or a value longer than its column fails the event naming the key.

    :raises PermanentEventError: the value cannot be stored.
    """
    value = metadata.get(key)
    if not isinstance(value, str) or not value:
        return None
    try:
        return check_text(value, column_length(column))
    except ValidationError as exc:
        raise PermanentEventError(f"data.object.metadata.{key}: {exc.messages[0]}") from None


def snapshot_balance(obj: dict) -> int | None:
    """Stripe's balance in a customer snapshot of any era (negative = credit); None when the
    snapshot states none (null, which the SDK's schema allows from 2023-10-16 on, or absent, as
    in the stub Stripe returns for a deleted customer)."""
    return obj["balance"] if "balance" in obj else obj.get("account_balance")


def snapshot_credit(obj: dict, currency: str | None, held: Iterable[str] = ()) -> dict[str | None, int]:
    """Credit available by currency (portal sign) that a snapshot states, as `_apply_snapshot`
    and `ledger.set_reported` take it: `balance` in the customer's own `currency`, and
    `invoice_credit_balance` for the others, with 0 for a currency of `held` (those the mirror
    has a balance in) that the map leaves out. Pure, for `webhook-service reconcile`.

    :raises PermanentEventError: a malformed credit map.
    """
    stated = _invoice_credit_balance(obj)
    credit: dict[str | None, int] = {
        other: amount for other, amount in (stated or {}).items() if other != currency
    }
    if stated is not None:  # a map lists every currency with a balance: the others hold none
        credit.update({other: 0 for other in held if other != currency and other not in credit})
    balance = snapshot_balance(obj)
    if balance is not None:  # a null balance states nothing about the own currency
        credit[currency] = -balance
    return credit


def handle_customer_event(event: dict, session: Session) -> None:
    """Merge a customer event: profile, entity, balance; then reconcile the credit ledger.

    The event is one its declared reading accepted (handlers.read).

    :raises PermanentEventError: a malformed credit map, or an id of another mode or account.
    """
    customer_id = required_id(event, "customer object")
    _invoice_credit_balance(event["data"]["object"])  # a malformed map fails this event at once
    customer = ensure_customer(session, customer_id, scope=event_scope(event))
    raw_created = event.get("created")
    created = raw_created if isinstance(raw_created, int) else 0
    if is_deletion_stub(event["data"]["object"]):
        # What Stripe answers for a deleted customer, should an event carry it: gone by then, and
        # nothing else said, so the mirrored profile, entity and credit stay, and no snapshot
        # outranks the ones before it. (The worker's own fetches mark the event `_gone_at` instead.)
        _mark_deleted(customer, ordering.observed_second(event))
    else:
        won = ordering.winner(session, event, customer.version_key, "customer", order_prefix)
        if won is not None and not is_deletion_stub(won[0]["data"]["object"]):
            # This event's snapshot, or on a same-second tie the newest logged one.
            snapshot, customer.version_key = won
            _apply_snapshot(session, customer, snapshot["data"]["object"], ordering.observed_second(snapshot))
    if event["type"] == "customer.deleted":
        _mark_deleted(customer, created)
    gone = ordering.gone_at(event)
    if gone is not None:  # a fetch found it deleted, the event's own snapshot applied above
        _mark_deleted(customer, gone)
    ledger.reconcile(customer)


def _mark_deleted(customer: Customer, second: int) -> None:
    """Deletion is sticky and keeps its earliest known second."""
    deleted_at = datetime.fromtimestamp(second, UTC)
    if customer.deleted_at is None or deleted_at < customer.deleted_at:
        customer.deleted_at = deleted_at


def first_invoice_currency(session: Session, customer_id: str) -> str | None:
    """The currency of the customer's earliest invoice (by Stripe's created), if any is mirrored."""
    return session.scalar(
        sa.select(Invoice.currency)
        .where(Invoice.customer_id == customer_id, Invoice.currency.is_not(None))
        .order_by(Invoice.created_at.is_(None), Invoice.created_at, Invoice.id)
        .limit(1)
    )


def settle_currency(session: Session, customer: Customer, invoice_currency: str | None) -> None:
    """After an invoice snapshot: a customer whose own events never stated a currency takes its
    first invoice's, not its newest's (order-free: recomputed when an invoice disagrees)."""
    if invoice_currency is None or invoice_currency == customer.currency:
        return
    if customer.currency is None:  # the first invoice seen with a currency
        customer.currency = invoice_currency
        return
    if customer.version_key.startswith("1.") and customer.currency is not None:
        return  # a customer event stated (or settled) it
    customer.currency = first_invoice_currency(session, customer.id) or customer.currency


def _invoice_credit_balance(obj: dict) -> dict[str, int] | None:
    """Stripe's `invoice_credit_balance` (currency → credit, positive = credit); None when the
    payload has none (webhooks never do: Stripe includes it only when a request expands it).

    :raises PermanentEventError: the map or one of its amounts has the wrong type.
    """
    value = obj.get("invoice_credit_balance")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise PermanentEventError(
            f"data.object.invoice_credit_balance: expected an object, got {type(value).__name__}"
        )
    credit = {}
    for currency, amount in value.items():
        if not isinstance(currency, str) or len(currency) != 3:
            raise PermanentEventError("data.object.invoice_credit_balance: keys must be currency codes")
        if isinstance(amount, bool) or not isinstance(amount, int):
            got = type(amount).__name__
            raise PermanentEventError(
                f"data.object.invoice_credit_balance.{currency}: expected an integer, got {got}"
            )
        credit[currency.lower()] = amount
    return credit

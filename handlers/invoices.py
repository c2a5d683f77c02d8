"""invoice.* events → the invoice mirror, its lines and its status history.

Order-free by construction: every event is an *observation* of the invoice. The row holds the
snapshot with the greatest version key, and each status entered keeps its earliest observation.
Both are max/min merges, so the result depends only on the set of events seen, never on their
delivery order, duplicates or replays. See docs/design.md.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from handlers import customers, invoice_eras, invoice_payments, ledger, ordering, past_due, status_history
from handlers.scopes import claim, copy_scope, event_scope
from handlers.settings import settings_of
from handlers.status_history import STATUS_RANK
from webhook_service.core.models import Invoice, InvoiceLine, LedgerKind
from webhook_service.core.values import (
    int_or_zero,
    is_deletion_stub,
    object_id,
    optional_int,
    required_id,
    timestamp,
)

EVENT_TYPES = frozenset(
    {
        "invoice.created",
        "invoice.updated",
        "invoice.deleted",
        "invoice.finalized",
        "invoice.finalization_failed",
        "invoice.marked_uncollectible",
        "invoice.paid",
        "invoice.payment_succeeded",
        "invoice.payment_failed",
        "invoice.payment_action_required",
        "invoice.payment_attempt_required",
        "invoice.overdue",
        "invoice.will_be_due",
        "invoice.overpaid",
        "invoice.sent",
        "invoice.voided",
    }
)

#: The event type that *causes* each status; it names the status change when it was seen.
CAUSING_TYPE = {
    "draft": "invoice.created",
    "open": "invoice.finalized",
    "paid": "invoice.paid",
    "void": "invoice.voided",
    "uncollectible": "invoice.marked_uncollectible",
}
#: Where Stripe records when the invoice entered each status.
TRANSITION_FIELD = {
    "open": "finalized_at",
    "paid": "paid_at",
    "void": "voided_at",
    "uncollectible": "marked_uncollectible_at",
}
LINE_CATEGORIES = ("usage", "fixed_fee", "adjustment")


def related_ids(event: dict) -> dict[str, set[str]]:
    """The rows this event touches, so a batch can lock them up front."""
    obj = event["data"]["object"]
    invoice_id = obj.get("id")
    customer_id = _customer_id(obj)
    return {
        "invoices": {invoice_id} if isinstance(invoice_id, str) else set(),
        "customers": {customer_id} if customer_id else set(),
    }


def handle_invoice_event(event: dict, session: Session) -> None:
    """Merge one invoice event into the mirror.

    :param event: the event as its declared reading returned it (handlers.read; any API version).
    :param session: the unit of work; the caller commits.
    :raises PermanentEventError: the invoice's id belongs to another mode or account.
    """
    obj = event["data"]["object"]
    invoice_id = required_id(event, "invoice object")
    stripe_status = invoice_eras.stripe_status(event["type"], obj)
    scope = event_scope(event)

    customer_id = _customer_id(obj)
    customer = (
        customers.ensure_customer(session, customer_id, _customer_hints(event, obj), scope)
        if customer_id
        else None
    )

    invoice = session.get(Invoice, invoice_id)
    if invoice is None:
        invoice = Invoice(id=invoice_id, version_key="", credit_applied=0, attempt_count=0)
        session.add(invoice)
    claim(invoice, "invoice", scope, established=bool(invoice.version_key))
    if is_deletion_stub(obj):  # a deleted draft, as Stripe's DELETE or a fetch answers
        _mark_deleted(invoice, _event_time(event, obj))
        return

    won = ordering.winner(session, event, invoice.version_key, "invoice", order_prefix)
    if won is not None:
        snapshot, invoice.version_key = won
        # Usually this event's own object; on a same-second tie, the newest logged snapshot's.
        snap = snapshot["data"]["object"]
        status = invoice_eras.stripe_status(snapshot["type"], snap)
        _apply_snapshot(invoice, snap, _customer_id(snap), status, settings_of(session).metered_price_ids)
        invoice_payments.apply_to_amounts(invoice)
        invoice.source_event_id = snapshot["id"]
    else:
        _adopt_whole_list(invoice, obj, stripe_status, settings_of(session).metered_price_ids)
    balance_changed = customer_id is not None and _observe_balance(session, customer_id, obj)
    if won is not None:
        if customer is not None:  # before the ledger: its balances are kept in the customer's currency
            customers.settle_currency(session, customer, invoice.currency)
        _sync_ledger(session, invoice)  # reconciles the customer's ledger
    elif balance_changed and customer is not None:
        ledger.reconcile(customer)  # once per event: two in one flush would re-insert the adjustment

    payments = (obj.get("payments") or {}).get("data") or []
    for payment in payments:  # basil and later, when the payload carries them
        version = f"{int_or_zero(event.get('created')):011d}.{event['id']}"
        invoice_payments.merge_payment(
            session, dict(payment, invoice=invoice_id), version, event["id"], scope
        )
    if payments:
        invoice_payments.settle(session, invoice)

    for line in invoice.lines:
        copy_scope(line, scope)

    if invoice_eras.is_deleted(event["type"], obj):
        _mark_deleted(invoice, _event_time(event, obj))
    gone = ordering.gone_at(event)
    if gone is not None:  # a fetch found the draft deleted, the event's own snapshot applied above
        _mark_deleted(invoice, timestamp(gone))

    _observe_status(invoice, event, obj, stripe_status)
    if not invoice_eras.has_transition_times(obj):
        _times_from_history(invoice)
    if stripe_status == "open":
        _observe_past_due(session, invoice, event, obj)
    past_due.settle(session, invoice)
    status_history.relink(invoice)
    invoice.status = status_history.portal_status(invoice)


def _event_time(event: dict, obj: dict) -> datetime | None:
    return timestamp(event.get("created")) or timestamp(obj.get("created"))


def _mark_deleted(invoice: Invoice, deleted_at: datetime | None) -> None:
    """Sticky; the earliest second showing the deletion gives its time, whatever the order."""
    if invoice.deleted_at is None or (deleted_at is not None and deleted_at < invoice.deleted_at):
        invoice.deleted_at = deleted_at


def _observe_past_due(session: Session, invoice: Invoice, event: dict, obj: dict) -> None:
    """An open snapshot shows past due when a payment failed or Stripe says overdue (at the event),
    or when the event is later than the due date (from the due date). No clock: the sweep covers
    invoices whose due date passes with no event at all."""
    created, due = timestamp(event.get("created")), timestamp(obj.get("due_date"))
    reasons = []
    if event["type"] in past_due.EVENT_TYPES and created:
        reasons.append(created)
    if due and created and created > due:
        reasons.append(due)
    if reasons:
        past_due.observe(
            session,
            invoice,
            at=min(reasons),
            event_id=event["id"],
            amount_remaining=_opt_int(obj, "amount_remaining"),
            currency=obj.get("currency"),
            due_date=due,
        )


def order_prefix(event: dict) -> str:
    """The comparable part of a snapshot's version: later status, later observation, signs of progress.

    `created` has one-second resolution, so same-second snapshots are ordered next by what can only
    grow (payment attempts, amount paid); a tie left after that is settled in handlers.ordering
    from the snapshots themselves, never by the event id. A snapshot the worker fetched from Stripe
    is an observation of the fetch's second.
    """
    obj = event["data"]["object"]
    rank = STATUS_RANK[invoice_eras.stripe_status(event["type"], obj)]
    attempts = int_or_zero(obj.get("attempt_count"))
    paid = max(int_or_zero(obj.get("amount_paid")), 0)
    return f"{rank:02d}.{ordering.observed_second(event):011d}.{attempts:05d}.{paid:015d}"


def _observation_key(event: dict, status: str) -> str:
    causal = 0 if CAUSING_TYPE.get(status) == event["type"] else 1
    return f"{causal}.{int_or_zero(event.get('created')):011d}.{event['id']}"


def _observe_status(invoice: Invoice, event: dict, obj: dict, status: str) -> None:
    """Merge what this snapshot shows about statuses entered.

    The snapshot's own status is observed directly; earlier statuses it records in
    `status_transitions` (e.g. finalized_at on a paid invoice) are inferred, so the trail is
    complete even when the event for that step was never delivered.
    """
    seen = [(status, _observation_key(event, status))]
    for earlier in TRANSITION_FIELD:
        if STATUS_RANK[earlier] < STATUS_RANK[status] and timestamp(_transition_time(obj, earlier)):
            seen.append((earlier, f"1.{int_or_zero(event.get('created')):011d}.{event['id']}"))
    for entered, key in seen:
        status_history.merge(invoice, entered, _status_entered_at(event, obj, entered), event["id"], key)


def _transition_time(obj: dict, status: str) -> int | None:
    """When the payload says the invoice entered `status` (any era's field), if it says."""
    if status == "open":
        return invoice_eras.finalized_at(obj)
    return (obj.get("status_transitions") or {}).get(TRANSITION_FIELD[status])


def _status_entered_at(event: dict, obj: dict, status: str) -> datetime:
    field = TRANSITION_FIELD.get(status)
    when = timestamp(_transition_time(obj, status) if field else invoice_eras.created(obj))
    return when or timestamp(event.get("created")) or datetime.fromtimestamp(0, UTC)


def _times_from_history(invoice: Invoice) -> None:
    """Payloads before 2019-03-14 do not say when the invoice was paid, voided or marked
    uncollectible: the trail's time for that status (the earliest event showing it) stands in."""
    for status, attribute in (
        ("paid", "paid_at"),
        ("void", "voided_at"),
        ("uncollectible", "marked_uncollectible_at"),
    ):
        row = status_history.find(invoice, status)
        setattr(invoice, attribute, row.at if row is not None else None)


def _apply_snapshot(
    invoice: Invoice,
    obj: dict,
    customer_id: str | None,
    status: str | None = None,
    metered_price_ids: frozenset[str] = frozenset(),
) -> None:
    status = status or obj["status"]
    lines = obj.get("lines") or {}
    stored_ids = [line.id for line in invoice.lines]
    keep_lines = keeps_whole_list(invoice.stripe_status, invoice.lines_complete, stored_ids, obj, status)
    transitions = obj.get("status_transitions") or {}
    invoice.number = obj.get("number")
    invoice.customer_id = customer_id
    invoice.stripe_status = status
    invoice.currency = obj.get("currency")
    for name, value in snapshot_amounts(obj, status).items():
        setattr(invoice, name, value)
    invoice.collection_method = invoice_eras.collection_method(obj)
    invoice.billing_reason = obj.get("billing_reason")
    invoice.subscription_id = _subscription_id(obj)
    invoice.attempt_count = int_or_zero(obj.get("attempt_count"))
    invoice.created_at = timestamp(invoice_eras.created(obj))
    invoice.issued_at = timestamp(obj.get("effective_at")) or timestamp(invoice_eras.finalized_at(obj))
    invoice.due_date = timestamp(obj.get("due_date"))
    invoice.paid_at = timestamp(transitions.get("paid_at"))
    invoice.voided_at = timestamp(transitions.get("voided_at"))
    invoice.marked_uncollectible_at = timestamp(transitions.get("marked_uncollectible_at"))
    invoice.period_start = timestamp(obj.get("period_start"))
    invoice.period_end = timestamp(obj.get("period_end"))
    invoice.hosted_invoice_url = obj.get("hosted_invoice_url")
    invoice.invoice_pdf = obj.get("invoice_pdf")
    invoice.pre_payment_credit_notes_amount = _opt_int(obj, "pre_payment_credit_notes_amount") or 0
    invoice.post_payment_credit_notes_amount = _opt_int(obj, "post_payment_credit_notes_amount") or 0
    invoice.amount_overpaid = _opt_int(obj, "amount_overpaid") or 0
    credited = invoice.pre_payment_credit_notes_amount + invoice.post_payment_credit_notes_amount
    invoice.credited_in_full = invoice.total is not None and invoice.total != 0 and credited >= invoice.total
    if not keep_lines:
        invoice.lines_complete = lines.get("has_more") is not True
        _replace_lines(invoice, lines.get("data") or [], metered_price_ids)


def snapshot_amounts(obj: dict, status: str) -> dict[str, int | None]:
    """The amounts a snapshot (as its reading returned it) gives the row, before partial payments
    (`invoice_payments.apply_to_amounts`). A pure function, so `webhook-service reconcile` can say
    what the mirror would hold for Stripe's copy without applying it. `status` is the snapshot's."""
    starting = _opt_int(obj, "starting_balance")
    ending = _opt_int(obj, "ending_balance")
    return {
        "subtotal": _opt_int(obj, "subtotal"),
        "tax": _tax(obj),
        "total": _opt_int(obj, "total"),
        "amount_due": _opt_int(obj, "amount_due"),
        "amount_paid": invoice_eras.amount_paid(obj, status),
        "amount_remaining": invoice_eras.amount_remaining(obj, status),
        "starting_balance": starting,
        "ending_balance": ending,
        "credit_applied": credit_applied(starting, ending),
    }


def _has_line_ids(line) -> bool:
    """A line whose ids line_keys can read (the worker checks payloads before they are read)."""
    return (
        isinstance(line, dict)
        and isinstance(line.get("id"), str)
        and isinstance(line.get("unique_id") or "", str)
    )


def _adopt_whole_list(invoice: Invoice, obj: dict, status: str, metered_price_ids: frozenset[str]) -> None:
    """An older finalized snapshot with the whole list completes a row whose newer one was truncated
    (a finalized invoice's lines never change), so completeness does not depend on delivery order.
    `status` is the snapshot's (derived where the payload has none)."""
    lines = obj.get("lines") or {}
    raw = [line for line in lines.get("data") or [] if isinstance(line, dict)]
    if invoice.lines_complete or lines.get("has_more") is True or status == "draft":
        return
    if invoice.stripe_status in (None, "draft") or not invoice.lines or not raw:
        return
    if invoice_eras.line_keys(raw)[: len(invoice.lines)] == [line.id for line in invoice.lines]:
        invoice.lines_complete = True
        _replace_lines(invoice, raw, metered_price_ids)


def keeps_whole_list(
    stored_status: str | None, stored_complete: bool | None, stored_ids, obj: dict, status: str | None = None
) -> bool:
    """True when a truncated payload's lines are the first page of the whole list the row holds.

    A finalized invoice's lines never change, so once the row holds all of them (completed from the
    API while it was already finalized), a later truncated snapshot keeps them instead of falling
    back to its first page, and the worker need not page them again. Lines are compared by their
    identity (`invoice_eras.line_keys`), the stored rows' ids; `status` is the snapshot's, derived
    where the payload has none (default: the payload's `status`).
    """
    lines = obj.get("lines") or {}
    page = invoice_eras.line_keys([line for line in lines.get("data") or [] if _has_line_ids(line)])
    return (
        lines.get("has_more") is True
        and stored_complete is True
        and stored_status not in (None, "draft")
        and (status if status is not None else obj.get("status")) != "draft"
        and bool(page)
        and list(stored_ids[: len(page)]) == page
    )


def _observe_balance(session: Session, customer_id: str, obj: dict) -> bool:
    """Credit applied at finalization moved the customer's balance to `ending_balance`: Stripe's
    balance at `finalized_at`, which the customer row follows until a newer customer snapshot
    arrives (no customer event may come for a while, or at all). Voiding gives the credit back,
    so a void invoice says `starting_balance` at `voided_at`."""
    starting, ending = _opt_int(obj, "starting_balance"), _opt_int(obj, "ending_balance")
    if starting is None or ending is None or starting == ending:
        return False
    transitions = obj.get("status_transitions") or {}
    at, balance = (
        (transitions.get("voided_at"), starting) if obj.get("status") == "void" else
        (transitions.get("finalized_at"), ending)
    )  # fmt: skip
    if not isinstance(at, int) or isinstance(at, bool):
        return False
    return customers.observe_balance(session, customer_id, balance, at, obj.get("currency"))


def _sync_ledger(session: Session, invoice: Invoice) -> None:
    """The customer-balance effects this invoice's newest snapshot implies (portal sign)."""
    if not invoice.customer_id:
        return
    desired: ledger.Desired = {}
    starting, ending = invoice.starting_balance, invoice.ending_balance
    if starting is not None and ending is not None and starting != ending:
        # Finalization moved the balance into the invoice: credit used (or a debt carried in).
        desired[LedgerKind.APPLIED_TO_INVOICE.value] = (
            starting - ending,
            invoice.currency,
            invoice.issued_at,
        )
        if invoice.stripe_status == "void":
            desired[LedgerKind.UNAPPLIED_FROM_INVOICE.value] = (
                ending - starting,
                invoice.currency,
                invoice.voided_at,
            )
    if invoice.amount_overpaid > 0:
        desired[LedgerKind.OVERPAYMENT.value] = (invoice.amount_overpaid, invoice.currency, invoice.paid_at)
    ledger.sync_source(session, invoice.customer_id, "invoice", invoice.id, desired)


def credit_applied(starting_balance: int | None, ending_balance: int | None) -> int:
    """Credit taken from the customer balance at finalization (Stripe balances are negative for credit)."""
    if starting_balance is None or ending_balance is None or starting_balance >= 0:
        return 0
    return max(0, min(ending_balance, 0) - starting_balance)


def _replace_lines(
    invoice: Invoice, raw_lines: list, metered_price_ids: frozenset[str] = frozenset()
) -> None:
    keys = invoice_eras.line_keys(raw_lines)
    wanted = [
        _line_values(invoice.id, position, line, key, metered_price_ids)
        for position, (line, key) in enumerate(zip(raw_lines, keys, strict=True))
    ]
    current = [_line_snapshot(line) for line in invoice.lines]
    if current == wanted:
        return
    by_id = {line.id: line for line in invoice.lines}
    new_lines = []
    for values in wanted:
        line = by_id.get(values["id"])
        if line is None:
            line = InvoiceLine(**values)
        else:
            for name, value in values.items():
                setattr(line, name, value)
        new_lines.append(line)
    invoice.lines = new_lines


_LINE_FIELDS = (
    "invoice_id", "id", "position", "description", "category", "amount", "currency",
    "quantity", "price_id", "proration", "period_start", "period_end",
)  # fmt: skip


def _line_snapshot(line: InvoiceLine) -> dict:
    return {name: getattr(line, name) for name in _LINE_FIELDS}


def _line_values(
    invoice_id: str, position: int, line: dict, key: str, metered_price_ids: frozenset[str] = frozenset()
) -> dict:
    period = line.get("period") or {}
    return {
        "invoice_id": invoice_id,
        "id": key,
        "position": position,
        "description": line.get("description"),
        "category": categorize_line(line, metered_price_ids),
        "amount": int_or_zero(line.get("amount")),
        "currency": line.get("currency"),
        "quantity": line.get("quantity") if isinstance(line.get("quantity"), int) else None,
        "price_id": _line_price_id(line),
        "proration": _is_proration(line),
        "period_start": timestamp(period.get("start")),
        "period_end": timestamp(period.get("end")),
    }


def categorize_line(line: dict, metered_price_ids: frozenset[str] = frozenset()) -> str:
    """usage, fixed_fee or adjustment.

    A `portal_category` in the metadata of the line, its price or its plan wins. Prorations and
    credits (negative amounts) are adjustments. Metered prices are usage, from whatever the
    payload carries: `price.recurring.usage_type` / `plan.usage_type` before 2025-03-31.basil, an
    expanded `pricing.price_details.price` from basil on; failing that, the configured
    METERED_PRICE_IDS (see docs/design.md). Everything else is a fixed fee.
    """
    prices = [p for p in (line.get("price"), line.get("plan"), _expanded_price(line)) if isinstance(p, dict)]
    for metadata in [line.get("metadata") or {}, *((p.get("metadata") or {}) for p in prices)]:
        if metadata.get("portal_category") in LINE_CATEGORIES:
            return metadata["portal_category"]
    if _is_proration(line) or int_or_zero(line.get("amount")) < 0:
        return "adjustment"
    for price in prices:
        if (
            price.get("usage_type") == "metered"
            or (price.get("recurring") or {}).get("usage_type") == "metered"
        ):
            return "usage"
    if _line_price_id(line) in metered_price_ids:
        return "usage"
    return "fixed_fee"


def _expanded_price(line: dict) -> dict:
    """`pricing.price_details.price` when it is an object (expanded; the worker fills it in)."""
    price = ((line.get("pricing") or {}).get("price_details") or {}).get("price")
    return price if isinstance(price, dict) else {}


def price_to_look_up(line: dict) -> str | None:
    """The price id whose usage type would decide this line's category, when the line lacks it.

    Basil and later lines name their price (`pricing.price_details.price`) without saying whether
    it is metered; lines whose category is settled otherwise (metadata, prorations, credits) need
    no lookup.
    """
    if isinstance(line.get("price"), dict) or isinstance(line.get("plan"), dict):
        return None
    if (line.get("metadata") or {}).get("portal_category") in LINE_CATEGORIES:
        return None
    if _is_proration(line) or int_or_zero(line.get("amount")) < 0:
        return None
    price = ((line.get("pricing") or {}).get("price_details") or {}).get("price")
    return price if isinstance(price, str) and price else None


def _is_proration(line: dict) -> bool:
    if line.get("proration") is True:
        return True
    parent = line.get("parent") or {}
    for key in ("subscription_item_details", "invoice_item_details"):
        if (parent.get(key) or {}).get("proration") is True:
            return True
    return False


def _line_price_id(line: dict) -> str | None:
    for price in (line.get("price"), line.get("plan")):
        if isinstance(price, dict) and price.get("id"):
            return price["id"]
    price = ((line.get("pricing") or {}).get("price_details") or {}).get("price")
    return object_id(price)


def _tax(obj: dict) -> int | None:
    """Tax in minor units: `total_taxes[]` (2025-03-31.basil and later) or `tax` (before), else
    `total − total_excluding_tax` where a version leaves the list null."""
    if isinstance(obj.get("total_taxes"), list):
        return sum(int_or_zero(t.get("amount")) for t in obj["total_taxes"] if isinstance(t, dict))
    if "tax" in obj:
        return _opt_int(obj, "tax")
    if isinstance(obj.get("total_tax_amounts"), list):
        return sum(int_or_zero(t.get("amount")) for t in obj["total_tax_amounts"] if isinstance(t, dict))
    total, excluding = obj.get("total"), obj.get("total_excluding_tax")
    if isinstance(total, int) and isinstance(excluding, int):
        return total - excluding  # no tax list stated (a null one is allowed): Stripe's two totals say it
    return None


def _subscription_id(obj: dict) -> str | None:
    parent = obj.get("parent") or {}
    details = parent.get("subscription_details") or {}
    value = details.get("subscription") or obj.get("subscription")
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) else None


def _customer_id(obj: dict) -> str | None:
    return object_id(obj.get("customer"))


def _customer_hints(event: dict, obj: dict) -> customers.CustomerHints:
    return customers.CustomerHints(
        name=obj.get("customer_name"),
        email=obj.get("customer_email"),
        currency=obj.get("currency"),
        livemode=obj.get("livemode") is True,
        version_key=f"0.{int_or_zero(event.get('created')):011d}.{event['id']}",
    )


def _opt_int(obj: dict, name: str) -> int | None:
    return optional_int(obj, name, "invoice")

"""Past due: entering it from events or the sweep, leaving it, and the notifications it writes.

An open invoice enters past due when a payment attempt fails (`invoice.payment_failed`), when
Stripe's Billing Automations send `invoice.overdue`, or when the daily sweep finds its due date
passed. It leaves for paid, void or uncollectible. Each invoice has at most one past-due episode
(statuses never move backwards), so "one notification per audience per episode" is the unique
key (invoice, kind, audience).

Order-free like the rest of the trail: the episode starts at its earliest observation, and the
notifications describe that moment (amount, due date, days past due). A sweep-made entry that a
later-delivered event proves wrong (the invoice was paid before its due date, but the webhook
came late) is withdrawn with its notifications, so the end state matches in-order delivery.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from handlers import status_history
from webhook_service.core.models import (
    Audience,
    Invoice,
    InvoiceStatus,
    Notification,
    NotificationKind,
    NotificationPreference,
)
from webhook_service.core.sql import dialect_insert

EVENT_TYPES = frozenset({"invoice.payment_failed", "invoice.overdue"})
PAST_DUE = InvoiceStatus.PAST_DUE.value
KIND = NotificationKind.INVOICE_PAST_DUE.value
DEFAULT_CHANNELS = "email"


def observe(
    session: Session,
    invoice: Invoice,
    *,
    at: datetime,
    event_id: str | None,
    amount_remaining: int | None,
    currency: str | None,
    due_date: datetime | None,
) -> None:
    """Merge one reason the invoice was past due at `at`; write or update its notifications.

    :param event_id: the event that showed it, or None for the sweep (a due date passing).
    """
    key = f"0.{int(at.timestamp()):011d}.{event_id or '~sweep'}"
    outcome = status_history.merge(invoice, PAST_DUE, at, event_id, key)
    if outcome == "unchanged":
        return
    values = {
        "amount_remaining": amount_remaining,
        "currency": currency,
        "due_date": due_date,
        "days_past_due": days_past_due(due_date, at),
        "created_at": at,
    }
    if outcome == "new":
        _insert_notifications(session, invoice, values)
    else:  # an earlier start of the same episode: the notifications describe that moment
        session.execute(
            sa.update(Notification)
            .where(Notification.invoice_id == invoice.id, Notification.kind == KIND)
            .values(**values)
        )


def settle(session: Session, invoice: Invoice) -> None:
    """Withdraw a past-due entry that the invoice's exit proves wrong (paid, voided or written off first)."""
    row = status_history.find(invoice, PAST_DUE)
    left = status_history.exit_time(invoice)
    if row is None or left is None or row.at < left:
        return
    status_history.remove(invoice, PAST_DUE)
    session.execute(
        sa.delete(Notification).where(Notification.invoice_id == invoice.id, Notification.kind == KIND)
    )


def days_past_due(due_date: datetime | None, at: datetime) -> int | None:
    """Whole days from the due date to `at` (0 before it); None without a due date."""
    if due_date is None:
        return None
    return max(0, (at - due_date).days)


def load_preferences(session: Session, customer_ids: Iterable[str | None]) -> None:
    """Load the preferences of these customers into the session in one query (batches, the sweep)."""
    ids = sorted({i for i in customer_ids if i})
    if ids:
        held: list = session.info.setdefault("locked_rows", [])
        held += session.scalars(
            sa.select(NotificationPreference).where(NotificationPreference.customer_id.in_(ids))
        ).all()
        session.info.setdefault("preferences_loaded", set()).update(ids)


def _preference(session: Session, customer_id: str) -> NotificationPreference | None:
    if customer_id in session.info.get("preferences_loaded", ()):
        return session.identity_map.get(session.identity_key(NotificationPreference, customer_id))
    return session.get(NotificationPreference, customer_id)


def _insert_notifications(session: Session, invoice: Invoice, values: dict) -> None:
    rows = [{"audience": Audience.ADMINS.value, "channels": DEFAULT_CHANNELS}]
    if invoice.customer_id:
        preference = _preference(session, invoice.customer_id)
        if preference is None or preference.past_due:
            rows.append(
                {
                    "audience": Audience.CUSTOMER.value,
                    "channels": preference.channels if preference else DEFAULT_CHANNELS,
                }
            )
    dialect = session.get_bind().dialect.name
    # A notification belongs to its invoice's mode and account, so test-mode invoices and other
    # Connect accounts' invoices never reach a live admin list by accident.
    common = {
        "kind": KIND, "invoice_id": invoice.id, "customer_id": invoice.customer_id,
        "livemode": bool(invoice.livemode), "account": invoice.account, **values,
    }  # fmt: skip
    if invoice in session.new:  # the row the notifications refer to must exist first
        session.flush()
    # The unique key (invoice, kind, audience) makes this exactly-once under any race. No autoflush:
    # the statement needs only the invoice row, and a flush here wrote the whole batch's dirty rows
    # once per notified invoice (a fifth of a drain's time with a tenth of invoices past due).
    with session.no_autoflush:
        session.execute(
            dialect_insert(dialect, Notification)
            .values([{**common, **row} for row in rows])
            .on_conflict_do_nothing()
        )

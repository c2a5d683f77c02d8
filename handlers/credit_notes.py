"""credit_note.* events → the credit note mirror and its effect on the customer's credit ledger.

Both API shapes: before 2025-03-31.basil a credit note has one `refund` id and no
`pre_payment_amount` / `post_payment_amount`; from basil on it has `refunds[]` (with amounts),
those two amounts, and the `mixed` type.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from handlers import customers, ledger
from handlers.scopes import claim, event_scope
from webhook_service.core.models import CreditNote, LedgerKind
from webhook_service.core.values import (
    int_or_zero,
    object_id,
    optional_int,
    required_id,
    timestamp,
)

EVENT_TYPES = frozenset({"credit_note.created", "credit_note.updated", "credit_note.voided"})
STATUS_RANK = {"issued": 0, "void": 1}


def related_ids(event: dict) -> dict[str, set[str]]:
    """The rows this event touches, for batch locking."""
    obj = event["data"]["object"]
    customer_id = object_id(obj.get("customer"))
    note_id = obj.get("id")
    return {
        "credit_notes": {note_id} if isinstance(note_id, str) else set(),
        "customers": {customer_id} if customer_id else set(),
    }


def handle_credit_note_event(event: dict, session: Session) -> None:
    """Merge a credit note event, then sync its ledger rows.

    The event is one its declared reading accepted (handlers.read).

    :raises PermanentEventError: the id belongs to another mode or account.
    """
    obj = event["data"]["object"]
    note_id = required_id(event, "credit note")
    status = obj["status"]
    scope = event_scope(event)
    customer_id = object_id(obj.get("customer"))
    if customer_id:
        customers.ensure_customer(session, customer_id, scope=scope)
    note = session.get(CreditNote, note_id)
    if note is None:
        note = CreditNote(id=note_id, version_key="")
        session.add(note)
    claim(note, "credit note", scope, established=bool(note.version_key))
    created = int_or_zero(event.get("created"))
    changed = 1 if (event.get("data") or {}).get("previous_attributes") else 0
    key = f"{STATUS_RANK[status]}.{created:011d}.{changed}.{event['id']}"
    if key <= (note.version_key or ""):
        return
    estimated = _apply_snapshot(note, obj, customer_id)
    if status == "void" and note.voided_at is None:
        note.voided_at = timestamp(created)
    note.version_key = key
    note.source_event_id = event["id"]
    if customer_id:
        desired: ledger.Desired = {}
        estimates: dict[str, int] = {}
        if note.credited_to_balance > 0:
            desired[LedgerKind.CREDIT_NOTE.value] = (note.credited_to_balance, note.currency, note.created_at)
            if note.status == "void":
                # A voided note nets to zero whatever its split was: nothing left to estimate.
                desired[LedgerKind.CREDIT_NOTE_VOIDED.value] = (
                    -note.credited_to_balance,
                    note.currency,
                    note.voided_at,
                )
            elif estimated:
                estimates[LedgerKind.CREDIT_NOTE.value] = note.credited_to_balance
        ledger.sync_source(session, customer_id, "credit_note", note.id, desired, estimates)


def _old_split(obj: dict, room: int, refund_id: str | None) -> tuple[int, int, bool]:
    """(refunded, credited, estimated) of a pre-basil note whose post-payment part is `room`.

    The object names its refund and balance transaction but not their amounts. An expanded one
    (in the payload, or fetched by the worker with an API key) settles the split; otherwise a note
    with both is `estimated`: it credits at most `room`, and the ledger gives back to the refund
    whatever the customer's reported balance leaves no room for (handlers/ledger.py).
    """
    balance_txn = obj.get("customer_balance_transaction")
    refund = obj.get("refund")
    if isinstance(balance_txn, dict):  # an expanded transaction: amount < 0 is credit
        credited = min(room, max(0, -balance_txn["amount"]))
        return (room - credited if refund_id else 0), credited, False
    if isinstance(refund, dict):
        refunded = min(room, max(0, refund["amount"]))
        return refunded, (room - refunded if balance_txn else 0), False
    if balance_txn and refund_id:
        return 0, room, True
    return (room if refund_id and not balance_txn else 0), (room if balance_txn else 0), False


def _apply_snapshot(note: CreditNote, obj: dict, customer_id: str | None) -> bool:
    """Copy the snapshot onto the row; True when its balance credit is only an upper bound."""
    amount = _amount(obj, "amount")
    out_of_band = _amount(obj, "out_of_band_amount")
    note_type = obj.get("type")
    new_shape = "post_payment_amount" in obj or isinstance(obj.get("refunds"), list)
    if new_shape:
        refunds = [r for r in obj.get("refunds") or [] if isinstance(r, dict)]
        refunded = sum(int_or_zero(r.get("amount_refunded")) for r in refunds)
        refund_ids = [object_id(r.get("refund")) for r in refunds]
        if "post_payment_amount" in obj:
            pre, post = _amount(obj, "pre_payment_amount"), _amount(obj, "post_payment_amount")
        else:  # 2025-03-31.basil has `refunds[]` but the split arrived with 2025-05-28.basil
            pre = amount if note_type == "pre_payment" else 0
            post = amount - pre
        credited = max(0, post - refunded - out_of_band) if obj.get("customer_balance_transaction") else 0
        estimated = False
    else:
        refund_id = object_id(obj.get("refund"))
        refund_ids = [refund_id] if refund_id else []
        pre = amount if note_type == "pre_payment" else 0
        post = amount if note_type == "post_payment" else 0
        refunded, credited, estimated = _old_split(obj, max(0, post - out_of_band), refund_id)
    note.invoice_id = object_id(obj.get("invoice"))
    note.customer_id = customer_id
    note.number = obj.get("number")
    note.type = note_type
    note.status = obj["status"]
    note.currency = obj.get("currency")
    note.amount = amount
    note.subtotal = _optional(obj, "subtotal")
    note.total = _optional(obj, "total")
    note.pre_payment_amount = pre
    note.post_payment_amount = post
    note.out_of_band_amount = out_of_band
    note.refunded_amount = refunded
    note.refund_ids = ",".join(r for r in refund_ids if r) or None
    note.credited_to_balance = credited
    note.customer_balance_transaction = object_id(obj.get("customer_balance_transaction"))
    note.reason = obj.get("reason")
    note.memo = obj.get("memo")
    note.pdf = obj.get("pdf")
    note.created_at = timestamp(obj.get("created"))
    note.voided_at = timestamp(obj.get("voided_at")) or note.voided_at
    return estimated


def _optional(obj: dict, name: str) -> int | None:
    return optional_int(obj, name, "credit note")


def _amount(obj: dict, name: str) -> int:
    return optional_int(obj, name, "credit note") or 0

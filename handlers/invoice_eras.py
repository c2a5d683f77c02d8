"""What an invoice payload of any API era means, where older eras say it differently.

The invoice handler reads the fields below through these functions only, so the era rules live
in one place (docs/design.md, "API eras"). Stripe adds fields to every API version, so a field's
presence, never `api_version`, says which rule applies:
- `status: "deleted"` (in the status enum of Stripe's spec from 2019-03-14 on) is a deleted draft:
  read as `draft`, and the handler marks the invoice deleted as `invoice.deleted` does;
- no `status` on payloads sent before it existed (SPEC.md: before 2018-02-28): derived from
  `paid`, `forgiven`, `closed`, `attempted` and the event type; `forgiven: true` (until
  2018-11-08, beside `status` too) is `uncollectible`;
- `date` (before 2019-03-14) is the creation and issue date; a top-level `finalized_at`
  (2018-02-28 to 2019-03-14) is the finalization time;
- `billing` (before 2019-10-17) is the collection method; before it existed every invoice was
  charged automatically;
- no `amount_paid`/`amount_remaining` on the oldest payloads: derived from `paid` and `amount_due`;
- subscription lines shared the subscription's id before 2018-05-21: such lines get an identity
  from what tells them apart (subscription item, plan or price, period start).
"""

from __future__ import annotations

import hashlib

#: Event types that only an invoice which left draft can cause (for payloads without `status`).
_OPEN_TYPES = frozenset(
    {
        "invoice.finalized",
        "invoice.sent",
        "invoice.payment_failed",
        "invoice.payment_action_required",
        "invoice.payment_attempt_required",
        "invoice.overdue",
        "invoice.will_be_due",
    }
)
#: Only a draft can be deleted; a snapshot saying so keeps the draft's place in the status order.
DELETED = "deleted"
#: Before 2018-05-21 a subscription line's `id` was its subscription's (`sub_…`), shared by the
#: subscription's lines however many the page shows.
_SUBSCRIPTION_PREFIX = "sub_"
#: A line key must fit invoice_lines.id (String(255)).
_MAX_LINE_KEY = 255


def stripe_status(event_type: str, obj: dict) -> str:
    """The invoice's Stripe status, derived where the payload has none (a deleted draft: draft)."""
    status = obj.get("status")
    if status == DELETED:
        return "draft"
    if obj.get("forgiven") is True and status != "void":
        return "uncollectible"
    if status is not None:
        return status
    if event_type == "invoice.voided":
        return "void"
    if event_type == "invoice.marked_uncollectible":
        return "uncollectible"
    if obj.get("paid") is True:
        return "paid"
    # `closed` only meant "no more automatic attempts" (auto_advance: false since 2018-11-08).
    if obj.get("attempted") is True or obj.get("closed") is True or event_type in _OPEN_TYPES:
        return "open"
    return "draft"


def is_deleted(event_type: str, obj: dict) -> bool:
    """Whether the event shows the (draft) invoice deleted: `invoice.deleted`, its status, or
    `deleted: true`."""
    return event_type == "invoice.deleted" or obj.get("status") == DELETED or obj.get("deleted") is True


def created(obj: dict) -> int | None:
    return obj.get("created") if obj.get("created") is not None else obj.get("date")


def finalized_at(obj: dict) -> int | None:
    """When the invoice was finalized (issued): status_transitions, the old top-level field,
    or, on payloads that predate finalization (`date` and no `finalized_at`), their `date`."""
    transitions = obj.get("status_transitions") or {}
    if transitions.get("finalized_at") is not None:
        return transitions["finalized_at"]
    if obj.get("finalized_at") is not None:
        return obj["finalized_at"]
    if "finalized_at" not in obj and "status_transitions" not in obj:
        return obj.get("date")
    return None


def has_transition_times(obj: dict) -> bool:
    """Whether the payload records when it was paid, voided or marked uncollectible (2019-03-14+)."""
    return isinstance(obj.get("status_transitions"), dict)


def collection_method(obj: dict) -> str:
    return obj.get("collection_method") or obj.get("billing") or "charge_automatically"


def amount_paid(obj: dict, status: str) -> int | None:
    if "amount_paid" in obj:
        return obj["amount_paid"]
    if obj.get("amount_due") is None:
        return None
    return obj["amount_due"] if status == "paid" else 0


def amount_remaining(obj: dict, status: str) -> int | None:
    if "amount_remaining" in obj:
        return obj["amount_remaining"]
    paid, due = amount_paid(obj, status), obj.get("amount_due")
    return None if due is None or paid is None else max(0, due - paid)


def line_keys(lines: list[dict]) -> list[str]:
    """A stable identity per line: `unique_id` (2019 payloads), else `id`, except that a line whose
    id is a subscription's (before 2018-05-21), or is shared with another line, gets the id plus
    what tells such lines apart. A list's first page gets the same keys as the whole list, so a
    truncated snapshot can be matched against the lines mirrored from a whole one."""
    base = [line.get("unique_id") or line["id"] for line in lines]
    counts: dict[str, int] = {}
    for key in base:
        counts[key] = counts.get(key, 0) + 1
    keys: list[str] = []
    for key, line in zip(base, lines, strict=True):
        if counts[key] > 1 or key.startswith(_SUBSCRIPTION_PREFIX):
            key = _distinguished(key, line)
        while key in keys:  # still shared (identical lines): their order is all that differs
            key = _fit(f"{key}#{len(keys)}")
        keys.append(key)
    return keys


def _distinguished(line_id: str, line: dict) -> str:
    plan = line.get("plan") or {}
    price = line.get("price") or {}
    item = line.get("subscription_item") or plan.get("id") or price.get("id") or ""
    start = (line.get("period") or {}).get("start")
    return _fit(f"{line_id}/{item}/{start if start is not None else ''}")


def _fit(key: str) -> str:
    if len(key) <= _MAX_LINE_KEY:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"{key[: _MAX_LINE_KEY - 33]}~{digest}"

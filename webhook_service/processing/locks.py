"""Locks that keep concurrent drains correct (row locks) and apart (advisory locks)."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.attributes import set_committed_value

import handlers
from handlers import past_due
from webhook_service.core.models import CreditNote, Customer, Invoice, StripeEvent, utcnow
from webhook_service.core.sql import dialect_insert

#: First half of the advisory-lock keys drains use (the second is `hashtext` of a row's key).
DRAIN_LOCK_NAMESPACE = 0x57485331


Parsed = list[tuple[StripeEvent, dict]]


def leave_contended(session: Session, parsed: Parsed) -> Parsed:
    """Keep the events whose rows no other drain is working on; leave the rest queued for later.

    Two drains claim different events (SKIP LOCKED), but their events often share rows: an
    invoice whose lifecycle straddles two batches, a customer with invoices in both. Each would
    then wait for the other's whole batch to commit, and two drains would run one after the other.
    So a drain first takes a non-blocking advisory lock per row key and processes only the events
    whose keys it got. The row locks taken after this stay what makes concurrent drains correct;
    the advisory locks only steer drains apart (a hash collision costs a deferral, nothing else).
    If another drain holds every event's keys, the batch goes ahead as a whole and waits for it,
    as it would without this step, so deferred events are never stranded.
    """
    if session.get_bind().dialect.name != "postgresql" or len(parsed) < 2:
        return parsed
    keys = [handlers.related_keys(event) for _, event in parsed]
    wanted = sorted(set().union(*keys))
    if not wanted:
        return parsed
    got: dict[str, bool] = dict(
        session.execute(
            sa.text(
                "SELECT k, pg_try_advisory_xact_lock(:ns, hashtext(k)) "
                "FROM unnest(CAST(:keys AS text[])) AS k"
            ),
            {"ns": DRAIN_LOCK_NAMESPACE, "keys": wanted},
        ).all()
    )
    kept = [item for item, event_keys in zip(parsed, keys, strict=True) if all(got[k] for k in event_keys)]
    return kept or parsed


def lock_related_rows(session: Session, events: Sequence[dict]) -> None:
    """Create missing rows, then load and lock every row a batch touches: one query per table, id order.

    Handlers then find every row in the session's identity map, so a batch of 500 events costs a
    few statements instead of a SELECT and an autoflush per event. Missing rows are inserted as
    empty stubs (`version_key = ""`, which any snapshot outranks) with ON CONFLICT DO NOTHING, so
    two drains creating the same invoice wait on each other instead of failing. Sorting the ids
    keeps concurrent drains from deadlocking; on SQLite the transaction holds the write lock.
    """
    wanted: dict[str, set[str]] = {"invoices": set(), "customers": set(), "credit_notes": set()}
    notifying = any(event.get("type") in past_due.EVENT_TYPES for event in events)
    for event in events:
        for table, ids in handlers.related_ids(event).items():
            wanted[table] |= ids
    invoice_ids, customer_ids, note_ids = wanted["invoices"], wanted["customers"], wanted["credit_notes"]
    now = utcnow()
    # The identity map holds unchanged rows weakly; keep them alive until the session closes.
    held: list = session.info.setdefault("locked_rows", [])
    if customer_ids:
        stubs = [{"id": i, "version_key": "", "livemode": False, "credit_balance": 0,
                  "entity_type": "organization", "created_at": now, "updated_at": now}
                 for i in sorted(customer_ids)]  # fmt: skip
        created = _insert_missing(session, Customer, stubs)
        held += _lock(session, Customer, customer_ids, created, (Customer.ledger, Customer.balances))
    if notifying:
        past_due.load_preferences(session, customer_ids)
    if invoice_ids:
        stubs = [
            {"id": i, "version_key": "", "status": "draft", "credit_applied": 0, "attempt_count": 0,
             "livemode": False, "lines_complete": True, "pre_payment_credit_notes_amount": 0,
             "post_payment_credit_notes_amount": 0, "amount_overpaid": 0, "credited_in_full": False,
             "updated_at": now}
            for i in sorted(invoice_ids)
        ]  # fmt: skip
        created = _insert_missing(session, Invoice, stubs)
        held += _lock(session, Invoice, invoice_ids, created, (Invoice.lines, Invoice.status_history))
    if note_ids:
        held += session.scalars(
            sa.select(CreditNote)
            .where(CreditNote.id.in_(sorted(note_ids)))
            .order_by(CreditNote.id)
            .with_for_update()
        ).all()


def _insert_missing(session: Session, model, stubs: list[dict]) -> set[str]:
    """Insert the stubs whose rows do not exist yet; the ids it created.

    With RETURNING, SQLAlchemy sends the rows as multi-row VALUES (its insertmanyvalues), one
    statement per thousand rows, compiled once.

    A row another transaction is inserting makes this wait for it, then skips it: only rows this
    transaction created come back.
    """
    dialect = session.get_bind().dialect.name
    insert = dialect_insert(dialect, model).on_conflict_do_nothing().returning(model.id)
    return set(session.scalars(insert, stubs))


def _lock(session: Session, model, ids: set[str], created: set[str], collections: tuple) -> list:
    """Load and lock the rows, with their collections, in id order.

    When every row was just created by this transaction (a backlog of new invoices), there are
    no children to read (the foreign keys see to it) and its insert already locked them: they are
    loaded with their collections set empty, one statement instead of three. Otherwise the rows
    are read with their collections' post-loads, as they always were.
    """
    query = sa.select(model).where(model.id.in_(sorted(ids))).order_by(model.id).with_for_update(of=model)
    if ids - created:
        return list(session.scalars(query.options(*(selectinload(c) for c in collections))).all())
    rows = list(session.scalars(query).all())
    for row in rows:
        unloaded = sa.inspect(row).unloaded
        for collection in collections:
            if collection.key in unloaded:
                set_committed_value(row, collection.key, [])
    return rows

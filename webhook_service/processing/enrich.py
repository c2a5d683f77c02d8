"""Complete an event's snapshot from Stripe's API before handlers see it (worker only, never the receiver).

A webhook payload is a snapshot with limits: lists carry their first page only, two snapshots of
one second may be indistinguishable, and newer API versions leave a line's usage type out. With
an API key, this step asks Stripe for what is missing, so handlers stay pure functions of a
complete snapshot:

* `lines.has_more` on an invoice or credit note: the whole list is paged from
  `GET /v1/{invoices|credit_notes}/{id}/lines` and replaces the embedded page;
* a same-second tie the payloads cannot settle (handlers.ordering), or revalidation configured for
  the object type (`STRIPE_REVALIDATE`): the object itself is fetched and becomes the event's
  snapshot, an observation of the fetch's second (skipped for final states: void invoices and
  credit notes, deleted objects); a fetch that finds the object deleted leaves the event's own
  snapshot in place and marks the event with the second it found it gone (`_gone_at`);
* a line whose price does not say whether it is metered (2025-03-31.basil and later): the price is
  read once from `GET /v1/prices/{id}` and cached (a price's recurring usage type never changes);
* a credit note before basil that both refunds and credits the balance: its balance transaction is
  read from `GET /v1/customers/{id}/balance_transactions/{id}`, whose amount is the credited part.

Fetching is skipped for a snapshot the row already has a newer one of (it could not win). A fetch
that keeps failing raises `StripeUnavailable`: the event is retried later, never handled without it.
Objects are requested in the event's API version and for the event's Connect account, so a fetched
snapshot reads like the payload it completes.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session

from handlers import customers, invoices, ordering
from handlers.ordering import FETCHED_AT, GONE_AT
from webhook_service.core.config import Config
from webhook_service.core.errors import StripeNotFound
from webhook_service.core.models import Customer, Invoice, InvoiceLine
from webhook_service.core.values import is_deletion_stub
from webhook_service.processing.stripe_client import StripeClient, build_client

logger = logging.getLogger(__name__)

#: Object types that may be revalidated, and where Stripe serves them.
OBJECT_PATHS = {"invoice": "/v1/invoices", "credit_note": "/v1/credit_notes", "customer": "/v1/customers"}
#: A price's usage type is cached this long in Redis (it cannot change; the TTL only bounds memory).
PRICE_CACHE_SECONDS = 30 * 86400
_FINAL = {"invoice": {"void"}, "credit_note": {"void"}}


@dataclass
class EnrichStats:
    """Fetches made, by purpose (benchmarks and tests read these)."""

    lines: int = 0
    ties: int = 0
    revalidated: int = 0
    prices: int = 0
    balance_transactions: int = 0
    skipped_stale: int = 0
    kept_lines: int = 0
    incomplete: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Fetching:
    """What the worker needs to complete snapshots: the client and what to revalidate."""

    client: StripeClient
    revalidate: frozenset[str] = frozenset()
    cache: redis.Redis | None = None

    def enricher(self) -> Enricher:
        """A fresh enricher (its fetches are shared within one batch only)."""
        return Enricher(self.client, self.revalidate, self.cache)


def build_fetching(config: Config, connection: redis.Redis | None) -> Fetching | None:
    """Fetching for this configuration, or None without STRIPE_API_KEY (handlers then see payloads)."""
    client = build_client(config, connection)
    if client is None:
        return None
    return Fetching(client, frozenset(config.stripe_revalidate), connection)


class Enricher:
    """One per drain: fetches are shared by the events of a batch (one object, one fetch)."""

    def __init__(
        self,
        client: StripeClient,
        revalidate: Iterable[str] = (),
        cache: redis.Redis | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.client = client
        self.revalidate = frozenset(revalidate)
        self.cache = cache
        self.clock = clock
        self.stats = EnrichStats()
        self._objects: dict[tuple, dict | None] = {}
        self._lines: dict[tuple, list[dict] | None] = {}
        self._usage: dict[tuple, str | None] = {}
        self._session: Session | None = None

    def _touch(self) -> None:
        """One trivial statement, so the batch's transaction is never idle longer than one request
        (PostgreSQL ends transactions idle past `idle_in_transaction_session_timeout`)."""
        if self._session is not None:
            self._session.execute(sa.text("SELECT 1"))

    def enrich(self, session: Session, event: dict) -> dict:
        """The event with a complete snapshot (a copy when anything changed).

        :raises StripeUnavailable: Stripe kept failing; retry the event later.
        """
        self._session = session
        obj = (event.get("data") or {}).get("object")
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            return event
        kind = obj.get("object")
        if kind not in OBJECT_PATHS:
            return event
        if self._is_stale(session, event, kind):
            self.stats.skipped_stale += 1
            return event
        event = self._maybe_fetch_object(session, event, kind)
        obj = event["data"]["object"]
        if kind in ("invoice", "credit_note"):
            event = self._complete_lines(event, kind)
        if kind == "invoice":
            event = self._add_usage_types(event)
        if kind == "credit_note":
            event = self._expand_balance_transaction(event)
        return event

    # ---- the object itself -------------------------------------------------------------
    def _maybe_fetch_object(self, session: Session, event: dict, kind: str) -> dict:
        obj = event["data"]["object"]
        if event.get("type", "").endswith(".deleted") or obj.get("status") in _FINAL.get(kind, ()):
            return event
        if event.get(FETCHED_AT) is not None:  # fetched already (backfill, reconcile --repair)
            return event
        reason = None
        if kind in self.revalidate:
            reason = "revalidated"
        elif kind in ("invoice", "customer") and not self._tie_is_settled(session, event, kind):
            reason = "ties"
        if reason is None:
            return event
        fetched = self._fetch_object(event, kind)
        if fetched is None:
            return event
        setattr(self.stats, reason, getattr(self.stats, reason) + 1)
        event = dict(event)
        if is_deletion_stub(fetched):
            # Gone since: the stub says nothing else, so the event keeps its own snapshot (ordered
            # like any other) and carries when the object was found deleted.
            event[GONE_AT] = int(self.clock())
            return event
        event["data"] = {**event["data"], "object": fetched}
        event[FETCHED_AT] = int(self.clock())
        return event

    def _fetch_object(self, event: dict, kind: str) -> dict | None:
        obj_id = event["data"]["object"]["id"]
        key = (kind, obj_id, event.get("account"), event.get("api_version"))
        if key not in self._objects:
            self._objects[key] = self.client.retrieve(
                f"{OBJECT_PATHS[kind]}/{obj_id}", **self._options(event)
            )
        fetched = self._objects[key]
        return copy.deepcopy(fetched) if fetched is not None else None

    def _tie_is_settled(self, session: Session, event: dict, kind: str) -> bool:
        family, prefix_of = _FAMILIES[kind]
        group = ordering.same_prefix_snapshots(session, event, family, prefix_of)
        return ordering.is_settled(group)

    def _is_stale(self, session: Session, event: dict, kind: str) -> bool:
        """The row already holds a later snapshot, so nothing fetched for this one could be mirrored."""
        if kind not in _FAMILIES or kind in self.revalidate:
            return False
        model = Invoice if kind == "invoice" else Customer
        stored = session.scalar(sa.select(model.version_key).where(model.id == event["data"]["object"]["id"]))
        _, prefix_of = _FAMILIES[kind]
        return ordering.key_prefix(stored) > prefix_of(event)

    # ---- lists -------------------------------------------------------------------------
    def _complete_lines(self, event: dict, kind: str) -> dict:
        obj = event["data"]["object"]
        lines = obj.get("lines")
        if not isinstance(lines, dict) or lines.get("has_more") is not True:
            return event
        if kind == "invoice" and self._row_has_whole_list(obj):
            self.stats.kept_lines += 1
            return event
        key = (kind, obj["id"], event.get("account"), event.get("api_version"), event.get(FETCHED_AT))
        if key not in self._lines:
            path = f"{OBJECT_PATHS[kind]}/{obj['id']}/lines"
            try:
                self._lines[key] = list(self.client.list_all(path, **self._options(event)))
            except StripeNotFound:
                self._lines[key] = None  # the object is gone: its lines stay incomplete
            self.stats.lines += 1
        full = self._lines[key]
        if full is None:
            self.stats.incomplete.append(obj["id"])
            return event
        event = copy.deepcopy(event)
        event["data"]["object"]["lines"].update({"data": copy.deepcopy(full), "has_more": False})
        return event

    def _row_has_whole_list(self, obj: dict) -> bool:
        """The mirror already holds this finalized invoice's whole list (handlers keep it)."""
        session = self._session
        if session is None:
            return False
        row = session.execute(
            sa.select(Invoice.stripe_status, Invoice.lines_complete).where(Invoice.id == obj["id"])
        ).first()
        if row is None:
            return False
        page = len((obj.get("lines") or {}).get("data") or [])
        ids = session.scalars(
            sa.select(InvoiceLine.id)
            .where(InvoiceLine.invoice_id == obj["id"])
            .order_by(InvoiceLine.position)
            .limit(page)
        ).all()
        return invoices.keeps_whole_list(row.stripe_status, row.lines_complete, ids, obj)

    # ---- credit notes ------------------------------------------------------------------
    def _expand_balance_transaction(self, event: dict) -> dict:
        """A pre-basil note with a refund and a balance transaction: fetch the transaction, whose
        amount is the part credited to the balance (the note itself does not say)."""
        obj = event["data"]["object"]
        txn, customer = obj.get("customer_balance_transaction"), obj.get("customer")
        if "post_payment_amount" in obj or isinstance(obj.get("refunds"), list):
            return event  # basil and later state the split
        if not (isinstance(txn, str) and txn and obj.get("refund") and isinstance(customer, str)):
            return event
        fetched = self.client.retrieve(
            f"/v1/customers/{customer}/balance_transactions/{txn}", **self._options(event)
        )
        self.stats.balance_transactions += 1
        if not isinstance(fetched, dict) or fetched.get("id") != txn:
            return event  # gone: the ledger estimates the split from the balance
        event = copy.deepcopy(event)
        event["data"]["object"]["customer_balance_transaction"] = fetched
        return event

    # ---- prices ------------------------------------------------------------------------
    def _add_usage_types(self, event: dict) -> dict:
        lines = (event["data"]["object"].get("lines") or {}).get("data") or []
        wanted = [line for line in lines if isinstance(line, dict) and invoices.price_to_look_up(line)]
        if not wanted:
            return event
        event = copy.deepcopy(event)
        for line in event["data"]["object"]["lines"]["data"]:
            price_id = invoices.price_to_look_up(line) if isinstance(line, dict) else None
            if price_id:
                usage = self._usage_type(price_id, event)
                line["pricing"]["price_details"]["price"] = {
                    "id": price_id,
                    "object": "price",
                    "recurring": {"usage_type": usage} if usage else None,
                }
        return event

    def _usage_type(self, price_id: str, event: dict) -> str | None:
        account = event.get("account") or "platform"
        key = (account, price_id)
        if key in self._usage:
            return self._usage[key]
        cache_key = f"stripe-price-usage:{account}:{price_id}"
        cached = self._cache_get(cache_key)
        if cached is not None:
            usage = cached or None
        else:
            price = self.client.retrieve(
                f"/v1/prices/{price_id}", account=event.get("account"), on_attempt=self._touch
            )
            self.stats.prices += 1
            usage = ((price or {}).get("recurring") or {}).get("usage_type")
            self._cache_set(cache_key, usage or "")
        self._usage[key] = usage
        return usage

    def _options(self, event: dict) -> dict:
        return {**_options(event), "on_attempt": self._touch}

    def _cache_get(self, key: str) -> str | None:
        if self.cache is None:
            return None
        try:
            value = self.cache.get(key)
        except redis.RedisError:
            return None
        return value.decode() if isinstance(value, bytes) else value

    def _cache_set(self, key: str, value: str) -> None:
        if self.cache is None:
            return
        try:
            self.cache.set(key, value, ex=PRICE_CACHE_SECONDS)
        except redis.RedisError:
            logger.warning("could not cache a price's usage type; it will be fetched again")


_FAMILIES = {
    "invoice": ("invoice", invoices.order_prefix),
    "customer": ("customer", customers.order_prefix),
}


def _options(event: dict) -> dict:
    return {"account": event.get("account"), "api_version": event.get("api_version")}

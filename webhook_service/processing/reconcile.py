"""`webhook-service reconcile`: does the mirror still say what Stripe says?

Events can be lost for good (an endpoint disabled for longer than Stripe retries, a resync past
Stripe's 30 days) or mis-read, and nothing else would tell. This pages Stripe's invoices
(`GET /v1/invoices` over a window of `created`), fetches the customers they name, and compares
each with its mirrored row **in the mirror's own terms**: Stripe's copy goes through the same
declared reading and the same mapping functions as a webhook's (`invoices.snapshot_amounts`,
`invoice_eras.stripe_status`, `customers.snapshot_credit`), so what differs is drift, not a
difference of representation. The portal's `past_due` is the mirror's refinement of Stripe's
`open`, not drift.

`repair` writes no mirrored row itself: the fetched objects of what drifted are recorded as
synthetic events (processing/snapshots.py, source `reconcile`) and a drain applies them as it
applies webhooks, so the ordering rules hold (a fetched copy is an observation of its fetch's
second, and a status never moves backwards). Each run is a `reconcile_runs` row and an audit row;
`/metrics` reports the last finished one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

import handlers
from handlers import customers, invoice_eras, invoices
from handlers.status_history import STATUS_RANK
from webhook_service.core.config import Config
from webhook_service.core.errors import PermanentEventError
from webhook_service.core.models import Customer, Invoice, ReconcileRun, utcnow
from webhook_service.processing import audit, counters, snapshots
from webhook_service.processing.db import Database
from webhook_service.processing.queue import EventQueue
from webhook_service.processing.stripe_client import StripeClient, build_client, is_live_key

logger = logging.getLogger(__name__)

#: The invoice fields compared, in the order reports list them.
INVOICE_FIELDS = (
    "status", "subtotal", "tax", "total", "amount_due", "amount_paid", "amount_remaining", "credit_applied",
)  # fmt: skip
#: A customer's credit in each currency Stripe states (`balance`, `invoice_credit_balance`).
CREDIT_BALANCE = "credit_balance"
#: Invoices Stripe has that the mirror lacks; mirrored invoices Stripe no longer has (404).
MISSING, GONE = "missing", "gone"
#: Objects Stripe returns that our reading refuses: the mirror could not hold them either.
UNREADABLE = "unreadable"
DRIFT_FIELDS = (*INVOICE_FIELDS, CREDIT_BALANCE, MISSING, GONE, UNREADABLE)
#: Example ids per field in a report (amounts and statuses only: never names or emails).
EXAMPLES = 3
#: The synthetic events' id prefix (`reconcile_<object id>_<run second>-<run id>`: two runs in
#: one second must not make one's repairs duplicates of the other's).
SOURCE = snapshots.RECONCILE
#: Mirrored rows loaded per query while comparing.
CHUNK = 100
#: An operator's run may wait for Stripe longer than a worker's fetch (as resync does).
MAX_ATTEMPTS = 6
MAX_WAIT_SECONDS = 30.0

_ACTION = "reconcile"
#: Stripe leaves a customer's credit in other currencies out unless asked for it.
_CREDIT_MAP = [("expand[]", "invoice_credit_balance")]


@dataclass(frozen=True)
class Window:
    """What a run compares: invoices created at or after `since` (Stripe's `created`)."""

    since: datetime
    customer: str | None = None
    #: A Connect account (`Stripe-Account`); None for the platform's own objects.
    account: str | None = None
    #: Compare at most this many invoices (Stripe lists newest first).
    limit: int | None = None

    def as_dict(self) -> dict:
        return {
            "since": self.since.isoformat(timespec="seconds"),
            "customer": self.customer,
            "account": self.account,
            "limit": self.limit,
        }


@dataclass
class FieldDrift:
    """How many objects differ in one field, and a few of them."""

    count: int = 0
    examples: list[dict] = field(default_factory=list)

    def add(self, *examples: dict) -> None:
        self.count += 1
        room = EXAMPLES - len(self.examples)
        self.examples.extend(examples[: max(room, 0)])


@dataclass
class ReconcileReport:
    """What one run compared, found and recorded."""

    window: Window
    started_at: datetime
    repair: bool = False
    run_id: int | None = None
    finished_at: datetime | None = None
    invoices: int = 0
    customers: int = 0
    drift: dict[str, FieldDrift] = field(default_factory=dict)
    #: Fetched objects recorded as synthetic events for the drains (with `repair`).
    repaired: int = 0
    #: Of those, what the event log did not take as new: (reason → count).
    not_recorded: dict[str, int] = field(default_factory=dict)

    @property
    def drift_found(self) -> bool:
        return any(d.count for d in self.drift.values())

    def counts(self) -> dict[str, int]:
        """Field → objects that drifted in it (fields without drift left out), in report order."""
        return {name: self.drift[name].count for name in DRIFT_FIELDS if name in self.drift}

    def note(self, name: str, *examples: dict) -> None:
        self.drift.setdefault(name, FieldDrift()).add(*examples)

    def as_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "finished_at": self.finished_at.isoformat(timespec="seconds") if self.finished_at else None,
            "window": self.window.as_dict(),
            "checked": {"invoices": self.invoices, "customers": self.customers},
            "drift_found": self.drift_found,
            "drift": {
                name: {"count": self.drift[name].count, "examples": self.drift[name].examples}
                for name in DRIFT_FIELDS
                if name in self.drift
            },
            "repair": self.repair,
            "repaired": self.repaired,
            "not_recorded": self.not_recorded,
        }


def build_reconcile_client(config: Config, connection: redis.Redis | None) -> StripeClient | None:
    """The Stripe client of a run (None without STRIPE_API_KEY): the workers' shared budget, an
    operator's patience."""
    return build_client(config, connection, max_attempts=MAX_ATTEMPTS, max_sleep=MAX_WAIT_SECONDS)


def reconcile(
    db: Database,
    queue: EventQueue | None,
    client: StripeClient,
    window: Window,
    *,
    actor: str,
    repair: bool = False,
    accept_mode: str = "any",
    clock: Callable[[], float] = time.time,
) -> ReconcileReport:
    """Compare the window's invoices and their customers with Stripe; with `repair`, record the
    fetched objects of what drifted and wake a drain.

    :raises StripeAPIError: Stripe kept failing (the run stays unfinished; the audit says why).
    """
    report = ReconcileReport(window=window, started_at=utcnow(), repair=repair)
    report.run_id = _start_run(db, actor, report.started_at, window)
    try:
        fixes = _Comparison(db, client, window, report, clock, live=is_live_key(client.api_key)).run()
        if repair and fixes:
            _record_fixes(db, queue, fixes, report, accept_mode)
    except Exception as exc:
        try:  # best effort: the database may be what failed
            audit.record_action(
                db, actor=actor, action=_ACTION, parameters=_parameters(report),
                result={"run_id": report.run_id, "error": type(exc).__name__, **report.counts()},
            )  # fmt: skip
        except sa.exc.SQLAlchemyError:
            logger.warning("reconcile run %s: could not record its failure in the audit trail", report.run_id)
        raise
    _finish_run(db, actor, report)
    return report


class _Comparison:
    """One pass over Stripe's listing: compares as it pages, keeps what a repair would record."""

    def __init__(
        self,
        db: Database,
        client: StripeClient,
        window: Window,
        report: ReconcileReport,
        clock: Callable[[], float],
        *,
        live: bool,
    ):
        self.db, self.client, self.window, self.report = db, client, window, report
        self.clock, self.live = clock, live
        self.options = {"account": window.account} if window.account else {}
        self.run_tag = f"{int(report.started_at.timestamp())}-{report.run_id}"
        #: object id → synthetic event of its fetched copy, for objects that drifted.
        self.fixes: dict[str, dict] = {}
        self.listed: set[str] = set()
        self.customer_ids: dict[str, None] = {}  # ordered set: the customers the invoices name
        self.customers_needed: set[str] = set()  # customers whose invoices are repaired
        self.oldest_created: int | None = None
        self.limited = False

    def run(self) -> list[dict]:
        page: list[tuple[dict, int]] = []
        params = [("created[gte]", str(int(self.window.since.timestamp())))]
        if self.window.customer:
            params.append(("customer", self.window.customer))
        requested = [int(self.clock())]  # the second the current page was asked for

        def stamp() -> None:
            requested[0] = int(self.clock())

        for obj in self.client.list_all("/v1/invoices", params, before_page=stamp, **self.options):
            if self.window.limit is not None and len(self.listed) >= self.window.limit:
                self.limited = True
                break
            if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
                continue
            self.listed.add(obj["id"])
            created = obj.get("created")
            if isinstance(created, int) and (self.oldest_created is None or created < self.oldest_created):
                self.oldest_created = created
            page.append((obj, requested[0]))
            if len(page) >= CHUNK:
                self._compare_invoices(page)
                page = []
        self._compare_invoices(page)
        self._check_unlisted()
        self._compare_customers()
        return list(self.fixes.values())

    # ---- invoices ----------------------------------------------------------------------
    def _compare_invoices(self, page: list[tuple[dict, int]]) -> None:
        if not page:
            return
        with self.db.sessions() as session:
            rows = {
                row.id: row
                for row in session.scalars(
                    sa.select(Invoice).where(Invoice.id.in_([o["id"] for o, _ in page]))
                )
            }
            for obj, fetched_at in page:
                self._compare_invoice(obj, rows.get(obj["id"]), fetched_at)

    def _compare_invoice(self, raw: dict, row: Invoice | None, fetched_at: int) -> None:
        self.report.invoices += 1
        event = self._event(raw, fetched_at)
        customer_id = _customer_id(raw)
        if customer_id:
            self.customer_ids.setdefault(customer_id)
        try:
            read = handlers.read(event)
        except PermanentEventError as exc:
            self.report.note(UNREADABLE, {"id": raw["id"], "field": _error_path(exc)})
            return
        obj = read["data"]["object"]
        status = invoice_eras.stripe_status(read["type"], obj)
        if row is None:
            self.report.note(MISSING, {"id": raw["id"], "mirror": None, "stripe": status})
            self._fix(raw["id"], event, customer_id)
            return
        expected = {"status": status, **invoices.snapshot_amounts(obj, status)}
        drifted = False
        for name in INVOICE_FIELDS:
            have = _mirror_status(row) if name == "status" else getattr(row, name)
            want = expected[name]
            if name == "status" and _as_stripe_status(have) == want:
                continue  # past_due: the mirror's refinement of open
            if have != want:
                self.report.note(name, {"id": row.id, "mirror": have, "stripe": want})
                drifted = True
        # A mirror *ahead* of Stripe (paid here, open there) is reported, not repaired: statuses
        # never move back, so the fetched copy would change nothing and only count as a repair.
        ahead = STATUS_RANK.get(_as_stripe_status(row.status), -1) > STATUS_RANK.get(status, -1)
        if drifted and not ahead:
            self._fix(raw["id"], event, customer_id)

    def _check_unlisted(self) -> None:
        """Mirrored invoices of the window Stripe did not list: gone (404), or compared one by one."""
        stmt = sa.select(Invoice.id).where(
            Invoice.created_at >= self.window.since,
            Invoice.deleted_at.is_(None),
            Invoice.livemode == self.live,
            Invoice.account.is_(None)
            if self.window.account is None
            else Invoice.account == self.window.account,
        )
        if self.window.customer:
            stmt = stmt.where(Invoice.customer_id == self.window.customer)
        if self.limited:  # a cut listing says nothing of invoices older than its last one, nor
            if self.oldest_created is None:  # of those of its last second it did not reach
                return
            stmt = stmt.where(Invoice.created_at > datetime.fromtimestamp(self.oldest_created, UTC))
        with self.db.sessions() as session:
            unlisted = [invoice_id for invoice_id in session.scalars(stmt) if invoice_id not in self.listed]
        for invoice_id in unlisted:
            asked_at = int(self.clock())  # before the request: a webhook created meanwhile stays newer
            raw = self.client.retrieve(f"/v1/invoices/{invoice_id}", **self.options)
            with self.db.sessions() as session:
                row = session.get(Invoice, invoice_id)
                if row is None:
                    continue
                if raw is None:
                    self.report.invoices += 1
                    self.report.note(GONE, {"id": invoice_id, "mirror": _mirror_status(row), "stripe": None})
                    if row.status == "draft":  # only drafts can be deleted: its invoice.deleted was lost
                        stub = {"id": invoice_id, "object": "invoice", "deleted": True, "livemode": self.live}
                        self._fix(invoice_id, self._event(stub, asked_at), None)
                else:
                    self._compare_invoice(raw, row, asked_at)

    # ---- customers ---------------------------------------------------------------------
    def _compare_customers(self) -> None:
        ids = list(self.customer_ids)
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            fetched = [self._fetch_customer(cid) for cid in chunk]
            with self.db.sessions() as session:
                stmt = (
                    sa.select(Customer).where(Customer.id.in_(chunk)).options(selectinload(Customer.balances))
                )
                rows = {row.id: row for row in session.scalars(stmt)}
                for customer_id, raw, fetched_at in fetched:
                    self._compare_customer(customer_id, raw, rows.get(customer_id), fetched_at)

    def _fetch_customer(self, customer_id: str) -> tuple[str, dict | None, int]:
        """The customer as Stripe has it, dated by the second it was asked for."""
        asked_at = int(self.clock())
        raw = self.client.retrieve(f"/v1/customers/{customer_id}", params=_CREDIT_MAP, **self.options)
        return customer_id, raw, asked_at

    def _compare_customer(
        self, customer_id: str, raw: dict | None, row: Customer | None, fetched_at: int
    ) -> None:
        if not isinstance(raw, dict) or raw.get("deleted") is True:
            return  # no balance to compare (a deleted customer keeps its last one in the mirror)
        event = self._event(raw, fetched_at)
        try:
            obj = handlers.read(event)["data"]["object"]
            own = obj.get("currency") or (row.currency if row else None)
            stated = customers.snapshot_credit(
                obj, own, held=[b.currency for b in row.balances] if row else ()
            )
        except PermanentEventError as exc:
            self.report.note(UNREADABLE, {"id": customer_id, "field": _error_path(exc)})
            return
        if row is None:  # created by its invoice's repair; the customer's snapshot brings its balance
            if customer_id in self.customers_needed:
                self.fixes[customer_id] = event
            return
        self.report.customers += 1
        held = {balance.currency: balance.credit_balance for balance in row.balances}
        differences = [
            {"id": customer_id, "currency": currency, "mirror": have, "stripe": credit}
            for currency, credit in sorted(stated.items(), key=lambda item: item[0] or "")
            if (have := row.credit_balance if currency is None else held.get(currency, 0)) != credit
        ]
        if differences:
            self.report.note(CREDIT_BALANCE, *differences)
            self.fixes[customer_id] = event

    # ---- helpers -----------------------------------------------------------------------
    def _event(self, raw: dict, fetched_at: int) -> dict:
        return snapshots.snapshot_event(
            raw, source=SOURCE, run=self.run_tag, fetched_at=fetched_at, account=self.window.account
        )

    def _fix(self, object_id: str, event: dict, customer_id: str | None) -> None:
        self.fixes[object_id] = event
        if customer_id:
            self.customers_needed.add(customer_id)


def _record_fixes(
    db: Database, queue: EventQueue | None, fixes: Iterable[dict], report: ReconcileReport, accept_mode: str
) -> None:
    recorded = snapshots.record_snapshots(db, None, fixes, accept_mode=accept_mode)
    report.repaired = recorded.recorded
    if recorded.recorded and queue is not None:
        try:
            queue.request_drain()
        except redis.RedisError as exc:  # they are in the log: recovery starts a drain for them
            logger.warning("reconcile: could not wake a drain (%s); recovery will", type(exc).__name__)
    not_recorded = {
        "duplicate": recorded.duplicates,
        "ignored": recorded.ignored,
        "refused": len(recorded.refused),
    }
    report.not_recorded = {reason: count for reason, count in not_recorded.items() if count}


def _start_run(db: Database, actor: str, started_at: datetime, window: Window) -> int:
    whole = window.customer is None and window.account is None and window.limit is None
    with db.sessions() as session, session.begin():
        run = ReconcileRun(
            started_at=started_at, actor=actor[:255], checked=0, drift={}, repaired=0,
            scope=window.as_dict(), whole=whole,
        )  # fmt: skip
        session.add(run)
        session.flush()
        return run.id


def _finish_run(db: Database, actor: str, report: ReconcileReport) -> None:
    """The run's row, its audit row and the repaired counter, in one transaction."""
    report.finished_at = utcnow()
    with db.sessions() as session, session.begin():
        run = session.get(ReconcileRun, report.run_id)
        if run is not None:
            run.finished_at = report.finished_at
            run.checked = report.invoices + report.customers
            run.drift = report.counts()
            run.repaired = report.repaired
        counters.add(session, {(counters.RECONCILE_REPAIRED, ""): report.repaired})
        audit.record(
            session,
            actor=actor,
            action=_ACTION,
            parameters=_parameters(report),
            result={
                "run_id": report.run_id,
                "invoices": report.invoices,
                "customers": report.customers,
                "drift": report.counts(),
                "repaired": report.repaired,
            },
        )


def _parameters(report: ReconcileReport) -> dict:
    return {**report.window.as_dict(), "repair": report.repair}


def last_run(session: Session) -> ReconcileRun | None:
    """The newest finished run over the whole window (what /metrics reports): a run scoped to a
    customer, an account or a limit checked less, so its "no drift" must not clear the alert."""
    stmt = (
        sa.select(ReconcileRun)
        .where(ReconcileRun.finished_at.is_not(None), ReconcileRun.whole.is_(True))
        .order_by(ReconcileRun.started_at.desc(), ReconcileRun.id.desc())
        .limit(1)
    )
    return session.scalar(stmt)


def _as_stripe_status(status: str) -> str:
    """The mirror's status as Stripe names it: `past_due` is the portal's refinement of `open`
    (its due date passed, or a payment failed), not a status Stripe has."""
    return "open" if status == "past_due" else status


def _mirror_status(row: Invoice) -> str:
    return "deleted" if row.deleted_at is not None else row.status


def _customer_id(obj: dict) -> str | None:
    customer = obj.get("customer")
    if isinstance(customer, dict):
        customer = customer.get("id")
    return customer if isinstance(customer, str) and customer else None


def _error_path(exc: PermanentEventError) -> str:
    """Where the reading failed, without what it found (which could quote customer data)."""
    return str(exc).split(":", 1)[0][:200]

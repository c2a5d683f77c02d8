"""Backfill years of history from Stripe's list endpoints, resumably (`webhook-service backfill`).

Resync (processing/resync.py) reads the Events API, which keeps 30 days; an account that goes
live with years of invoices needs the objects themselves. This pages GET /v1/customers, then
/v1/invoices, then /v1/credit_notes (customers first, so invoices find their customer's row and
entity; credit notes last, so they find their invoice), and records each object as a snapshot
event (processing/snapshots.py): a drain applies it through the same handlers and ordering rules
as a webhook, so a snapshot never overwrites what a newer webhook said.

Resumable: one cursor per list, account and mode (`backfill_cursors`; a test key and a live key
list different objects) holds the run's start second and the last object recorded, with its
`created`: when Stripe no longer has that object (deleted since), it refuses `starting_after` and
the list resumes at `created[lte]` that second instead (what is read twice is a duplicate). The
cursor moves only after a page's snapshots are committed to the event log, so a killed run
resumes after its last committed page; the page in flight is read again and its objects, whose
snapshot ids depend on the run's second only, are duplicates. Lists that finished since the
interrupted run started are skipped; once every chosen list is finished, the next backfill
starts a new run (a new second: a new observation of every object).

Requests go through the one Stripe client (its shared budget, its retry policy with Retry-After)
with an operator's patience, as resync's.

One backfill per list, account and mode at a time: each cursor move is a compare-and-set on the
position the page was read from, so a second run over the same list stops (`BackfillConflict`) at
its first page instead of moving the cursor back and forth; a killed run holds nothing and never
blocks the next one (no lease, no session-level lock, which transaction-pooling PgBouncer drops).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session

from webhook_service.core.config import Config
from webhook_service.core.errors import StripeNotFound, StripeUnavailable
from webhook_service.core.models import BackfillCursor, utcnow
from webhook_service.processing.db import Database
from webhook_service.processing.queue import EventQueue
from webhook_service.processing.resync import MAX_ATTEMPTS, MAX_WAIT_SECONDS
from webhook_service.processing.snapshots import BACKFILL, record_snapshots, snapshot_event
from webhook_service.processing.stripe_client import PAGE_SIZE, StripeClient, build_client, is_live_key

logger = logging.getLogger(__name__)

#: The lists, in the order they are read (see the module's docstring) and their endpoints.
RESOURCES = ("customers", "invoices", "credit_notes")
PATHS = {"customers": "/v1/customers", "invoices": "/v1/invoices", "credit_notes": "/v1/credit_notes"}
#: Lists whose objects embed a first page of lines (`lines.has_more`), completed before recording.
WITH_LINES = frozenset({"invoices", "credit_notes"})
#: The `<source>` of the snapshot events' ids (`backfill_<object id>_<run second>`).
SOURCE = BACKFILL
#: The cursor's account for the platform's own objects (the column is part of the key, never null).
PLATFORM = ""


@dataclass
class ListReport:
    """What one list's backfill did in this invocation."""

    resource: str
    run_started_at: datetime
    #: True when this invocation continued the list where a previous one stopped.
    resumed: bool = False
    #: True when the list was finished earlier in the run this invocation continues.
    skipped: bool = False
    #: Objects the run had listed before this invocation, and the last of them (from the cursor).
    listed_before: int = 0
    resumed_after: str | None = None
    resumed_after_created: int | None = None
    listed: int = 0
    recorded: int = 0
    duplicates: int = 0
    ignored: int = 0
    #: Objects the event log refused (an id longer than the mirror's columns): object id → reason.
    refused: dict[str, str] = field(default_factory=dict)
    #: Times Stripe no longer had the cursor's object and the list resumed at its `created` second.
    cursor_gone: int = 0
    #: Objects whose lines were completed from their own list endpoint.
    lines_completed: int = 0
    #: Objects Stripe no longer had when their lines were asked for (recorded with their first page).
    lines_incomplete: list[str] = field(default_factory=list)
    finished: bool = False


@dataclass
class BackfillReport:
    """Every list's report, and what it cost in requests."""

    account: str | None
    dry_run: bool
    lists: list[ListReport] = field(default_factory=list)
    requests: int = 0
    retries: int = 0

    @property
    def recorded(self) -> int:
        return sum(item.recorded for item in self.lists)


class BackfillStopped(Exception):
    """A backfill stopped part-way (its cause is `__cause__`); `report` says what it had done.

    What it recorded stays, and so does its cursor: the same command resumes after the last page.
    """

    def __init__(self, report: BackfillReport):
        super().__init__("backfill stopped")
        self.report = report


class BackfillInterrupted(KeyboardInterrupt):
    """Ctrl-C during a backfill; `report` says what it had done (committed pages stay)."""

    def __init__(self, report: BackfillReport):
        super().__init__("backfill interrupted")
        self.report = report


class BackfillConflict(Exception):
    """Another backfill of the same list, account and mode moved the cursor: this one stops."""


#: Called after each page: the list's report so far and how many objects the page held.
Progress = Callable[[ListReport, int], None]


def build_backfill_client(config: Config, connection: redis.Redis | None, **options) -> StripeClient | None:
    """The Stripe client for a backfill: the workers' shared budget, an operator's patience."""
    options = {"max_attempts": MAX_ATTEMPTS, "max_sleep": MAX_WAIT_SECONDS, **options}
    return build_client(config, connection, **options)


def backfill(
    db: Database,
    queue: EventQueue | None,
    client: StripeClient,
    *,
    resources: Iterable[str] = RESOURCES,
    since: datetime | None = None,
    account: str | None = None,
    restart: bool = False,
    dry_run: bool = False,
    accept_mode: str = "any",
    progress: Progress | None = None,
    clock: Callable[[], float] = time.time,
) -> BackfillReport:
    """Page the chosen lists (in `RESOURCES` order) and record every object as a snapshot event.

    :param since: only objects created at or after this time (`created[gte]`).
    :param account: a Connect account (`acct_…`): its objects, asked for with `Stripe-Account`.
    :param restart: ignore an unfinished cursor and start a new run from the newest object.
    :param dry_run: count what the lists hold; record nothing, move no cursor, complete no lines.
    :raises BackfillStopped: Stripe kept refusing (a StripeAPIError as its cause), the database stopped
        answering, or anything else; pages committed so far stay, and so does the cursor.
    """
    chosen = set(resources)
    unknown = chosen - set(RESOURCES)
    if unknown:
        raise ValueError(f"unknown lists {sorted(unknown)!r}; expected some of {RESOURCES!r}")
    report = BackfillReport(account=account, dry_run=dry_run)
    livemode = is_live_key(client.api_key)
    plan = _Plan(since, account, livemode, dry_run, accept_mode, progress, clock)
    requests_before, retries_before = client.stats.requests, client.stats.retries
    try:
        ordered = [name for name in RESOURCES if name in chosen]
        report.lists = _plan_runs(
            db, ordered, account, livemode, restart=restart, dry_run=dry_run, now=clock()
        )
        for item in report.lists:
            if not item.skipped:
                _backfill_list(db, queue, client, item, plan)
    except KeyboardInterrupt as exc:
        raise BackfillInterrupted(report) from exc
    except Exception as exc:
        raise BackfillStopped(report) from exc
    finally:
        report.requests = client.stats.requests - requests_before
        report.retries = client.stats.retries - retries_before
    return report


@dataclass(frozen=True)
class _Plan:
    """What every list of one backfill shares."""

    since: datetime | None
    account: str | None
    livemode: bool
    dry_run: bool
    accept_mode: str
    progress: Progress | None
    clock: Callable[[], float]


def _backfill_list(
    db: Database, queue: EventQueue | None, client: StripeClient, item: ListReport, plan: _Plan
) -> None:
    account = plan.account
    params = [("created[gte]", str(int(plan.since.timestamp())))] if plan.since else []
    if item.resource == "customers":  # else Stripe leaves out the credit in other currencies
        params.append(("expand[]", "data.invoice_credit_balance"))
    run_second = int(item.run_started_at.timestamp())
    cursor, cursor_created = item.resumed_after, item.resumed_after_created
    while True:
        # Taken before the request: a webhook created while Stripe answered still outranks the page.
        fetched_at = int(plan.clock())
        page = _read_page(client, item, params, cursor, cursor_created, account)
        objects = page["data"]  # every item an object with an id (StripeClient.get_page)
        has_more = page["has_more"] and bool(objects)
        item.listed += len(objects)
        if not plan.dry_run:
            if item.resource in WITH_LINES:
                objects = [_with_all_lines(client, item, obj, account) for obj in objects]
            snapshot = functools.partial(
                snapshot_event, source=SOURCE, run=run_second, fetched_at=fetched_at, account=account
            )
            events = [snapshot(obj) for obj in objects]
            recorded = record_snapshots(db, queue, events, accept_mode=plan.accept_mode)
            item.recorded += recorded.recorded
            item.duplicates += recorded.duplicates
            item.ignored += recorded.ignored
            object_of = {event["id"]: event["data"]["object"]["id"] for event in events}
            item.refused.update({str(object_of.get(k, k)): reason for k, reason in recorded.refused.items()})
            # Only now, with the page committed, does the cursor move past it.
            last, last_created = _position(objects[-1]) if objects else (cursor, cursor_created)
            _advance(db, item, plan, (cursor, last, last_created), len(objects), finished=not has_more)
        if plan.progress is not None:
            plan.progress(item, len(objects))
        if not has_more:
            item.finished = True
            return
        cursor, cursor_created = _position(objects[-1])


def _position(obj: dict) -> tuple[str, int | None]:
    created = obj.get("created")
    return obj["id"], created if isinstance(created, int) and not isinstance(created, bool) else None


def _read_page(
    client: StripeClient,
    item: ListReport,
    params: list[tuple[str, str]],
    cursor: str | None,
    cursor_created: int | None,
    account: str | None,
) -> dict:
    """The page after `cursor`; when Stripe no longer has that object (400 resource_missing), the
    page of objects created at or before its second, which repeats only objects of that second."""
    page_params = [*params, ("limit", str(PAGE_SIZE))]
    if not cursor:
        return client.get_page(PATHS[item.resource], page_params, account=account)
    try:
        after = [*page_params, ("starting_after", cursor)]
        return client.get_page(PATHS[item.resource], after, account=account)
    except StripeUnavailable as exc:
        gone = exc.http_status == 400 and exc.stripe_code == "resource_missing"
        if not gone or exc.stripe_param not in (None, "starting_after") or cursor_created is None:
            raise
    logger.warning("%s %s is gone: listing from its second (%d) on", item.resource, cursor, cursor_created)
    item.cursor_gone += 1
    return client.get_page(
        PATHS[item.resource], [*page_params, ("created[lte]", str(cursor_created))], account=account
    )


def _with_all_lines(client: StripeClient, item: ListReport, obj: dict, account: str | None) -> dict:
    """The object with its whole line list: Stripe embeds the first 10 and says `has_more`."""
    lines = obj.get("lines")
    if not isinstance(lines, dict) or lines.get("has_more") is not True:
        return obj
    path = f"{PATHS[item.resource]}/{obj['id']}/lines"
    try:
        full = list(client.list_all(path, account=account))  # the first page again: one list, in order
    except StripeNotFound:  # gone since it was listed: recorded as listed, the mirror says incomplete
        logger.warning("%s %s vanished before its lines were read", item.resource, obj["id"])
        item.lines_incomplete.append(obj["id"])
        return obj
    item.lines_completed += 1
    return {**obj, "lines": {**lines, "data": full, "has_more": False}}


def _key(resource: str, account: str | None, livemode: bool) -> tuple[str, str, bool]:
    return resource, account or PLATFORM, livemode


def _plan_runs(
    db: Database,
    resources: list[str],
    account: str | None,
    livemode: bool,
    *,
    restart: bool,
    dry_run: bool,
    now: float,
) -> list[ListReport]:
    """Each chosen list's part in this invocation, decided and saved in one transaction.

    While a chosen list is unfinished, the backfill it belongs to goes on: unfinished lists resume
    after their cursor, and lists that finished since it started are skipped (a backfill killed in
    its invoices does not list its customers again). Every other list (all of them with
    `restart`) starts a new run, saved before any page is read.
    """
    with db.sessions() as session, session.begin():
        stmt = sa.select(BackfillCursor).where(
            BackfillCursor.account == (account or PLATFORM), BackfillCursor.livemode == livemode
        )
        rows = {row.resource: row for row in session.scalars(stmt)}
        unfinished = [rows[r] for r in resources if r in rows and rows[r].finished_at is None]
        begun = None if restart or not unfinished else min(row.run_started_at for row in unfinished)
        plan = []
        for resource in resources:
            row = rows.get(resource)
            if begun is not None and row is not None and row.finished_at is None:
                plan.append(
                    ListReport(resource, row.run_started_at, resumed=row.starting_after is not None,
                               listed_before=row.listed, resumed_after=row.starting_after,
                               resumed_after_created=row.starting_after_created)
                )  # fmt: skip
            elif begun is not None and row is not None and row.finished_at and row.finished_at >= begun:
                plan.append(ListReport(resource, row.run_started_at, skipped=True, finished=True))
            else:
                second = _new_run(session, row, _key(resource, account, livemode), now, dry_run)
                plan.append(ListReport(resource, second))
        return plan


def _new_run(
    session: Session,
    row: BackfillCursor | None,
    key: tuple[str, str, bool],
    now: float,
    dry_run: bool,
) -> datetime:
    """Start the list's new run at a second later than its previous run's (so its snapshots are new
    events even when two runs start within one second); returns that second."""
    latest = int(row.run_started_at.timestamp()) if row is not None else 0
    second = datetime.fromtimestamp(max(int(now), latest + 1), UTC)
    if dry_run:
        return second
    if row is None:
        row = BackfillCursor(resource=key[0], account=key[1], livemode=key[2])
        session.add(row)
    row.run_started_at, row.starting_after, row.listed = second, None, 0
    row.starting_after_created = None
    row.updated_at, row.finished_at = utcnow(), None
    return second


def _advance(
    db: Database,
    item: ListReport,
    plan: _Plan,
    move: tuple[str | None, str | None, int | None],
    count: int,
    *,
    finished: bool,
) -> None:
    """Move the cursor from where the page was read (`move[0]`) past it, if it is still there.

    :raises BackfillConflict: another backfill of the list moved it (or started a new run) since.
    """
    read_after, last_id, last_created = move
    resource, account, livemode = _key(item.resource, plan.account, plan.livemode)
    now = utcnow()
    values: dict = {"starting_after": last_id, "starting_after_created": last_created,
                    "listed": BackfillCursor.listed + count, "updated_at": now}  # fmt: skip
    if finished:
        values["finished_at"] = now
    where = [BackfillCursor.resource == resource, BackfillCursor.account == account,
             BackfillCursor.livemode == livemode]  # fmt: skip
    with db.sessions() as session, session.begin():
        moved = session.execute(  # type: ignore[attr-defined]  # a CursorResult for an UPDATE
            sa.update(BackfillCursor)
            .where(
                *where,
                BackfillCursor.run_started_at == item.run_started_at,
                BackfillCursor.finished_at.is_(None),
                BackfillCursor.starting_after.is_(None)
                if read_after is None
                else BackfillCursor.starting_after == read_after,
            )  # fmt: skip
            .values(**values)
            .execution_options(synchronize_session=False)
        ).rowcount
        if moved:
            return
        if session.scalar(sa.select(sa.func.count()).select_from(BackfillCursor).where(*where)) == 0:
            return  # removed by hand mid-run: nothing to advance, the next run starts afresh
    mode = "live" if livemode else "test"
    scope = f"{account or 'the platform'}, {mode} mode"
    raise BackfillConflict(
        f"another backfill of {resource} ({scope}) moved its cursor: run one backfill per list at a time"
    )

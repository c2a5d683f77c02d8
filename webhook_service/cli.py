"""The `webhook-service` console script: one click group, each command builds the app first.

Commands import what they use when they run, so `--help` and argument errors cost no more than
click: the app stack (Flask, SQLAlchemy, RQ, psycopg) loads only for a command that needs it.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from typing import TYPE_CHECKING

import click

from webhook_service import cli_backfill, cli_operator, cli_reconcile, startup
from webhook_service.cli_support import (
    WHEN,
    WHEN_HELP,
    build_app_or_exit,
    check_range,
    current_actor,
    error_first_line,
    follow,
    print_table,
    warn_unknown_types,
)
from webhook_service.core.config import MIN_RETENTION_DAYS
from webhook_service.core.errors import error_summary

if TYPE_CHECKING:  # loaded by the commands that use them, not for `--help`
    from webhook_service.core.models import StripeEvent
    from webhook_service.processing.event_filter import EventFilter

#: The daily prune (UTC), away from the default past-due sweep at 06:00 and month-start bursts' peak.
PRUNE_CRON = "30 3 * * *"
PRUNE_JOB_TIMEOUT_SECONDS = 3600


@click.group()
@click.version_option(package_name="webhook-service", prog_name="webhook-service")
@click.option(
    "--actor",
    envvar="WEBHOOK_SERVICE_ACTOR",
    help="Who is acting, for the audit trail (default: cli:<OS user>); env WEBHOOK_SERVICE_ACTOR.",
)
def cli(actor: str | None) -> None:
    """Stripe webhook receiver, worker and operator tools."""


for _command in cli_operator.COMMANDS:
    cli.add_command(_command)
cli.add_command(cli_reconcile.reconcile_command)
cli.add_command(cli_backfill.backfill_command)


@cli.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface)."
)
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
def serve(host: str, port: int) -> None:
    """Run the receiver with an in-process worker (development)."""
    app = build_app_or_exit(role="serve")  # first: a bad configuration is refused before the imports
    from webhook_service.web.reporter import start_reporter
    from webhook_service.workers import EmbeddedWorker

    worker = EmbeddedWorker(app)
    worker.start()
    start_reporter(app)
    click.echo(f"serving on http://{host}:{port}/webhooks/stripe (dev server, in-process worker)")
    try:
        app.run(host=host, port=port, threaded=True, use_reloader=False)
    finally:
        worker.stop()


@cli.command()
@click.option("--burst", is_flag=True, help="Quit when the queue is empty.")
@click.option("--no-fork", is_flag=True, help="Run jobs in this process (SimpleWorker).")
def worker(burst: bool, no_fork: bool) -> None:
    """Run an RQ worker (with RQ's scheduler, so retries fire) on REDIS_URL."""
    app = build_app_or_exit(role="worker")  # first: a bad configuration is refused before the imports
    import redis

    from webhook_service.processing import recovery
    from webhook_service.web.services import get_services
    from webhook_service.workers import build_worker, stop_requested

    services = get_services(app)
    recovery.recover(services.db, services.queue)  # pick up what an earlier crash or restart left behind
    rq_worker = build_worker(app, forking=not no_fork)
    startup.log_ready("worker", queue=services.config.queue_name, name=rq_worker.name)
    while True:
        with contextlib.suppress(redis.RedisError):  # its own teardown, when Redis is what failed
            rq_worker.work(burst=burst, with_scheduler=True)
        if burst or stop_requested(rq_worker):
            return
        # RQ's loop quits on a Redis error outside its BLPOP (a Redis outage, an empty restart);
        # this process outlives it: a fresh worker once Redis answers, with no one restarting it.
        click.echo("worker: RQ's loop ended on an error; starting again once Redis answers", err=True)
        while True:
            time.sleep(2)
            try:
                rq_worker = build_worker(app, forking=not no_fork)
                break
            except redis.RedisError:
                continue


@cli.command()
def scheduler() -> None:
    """Run the periodic jobs (recovery every minute, the daily past-due sweep and prune, and the
    daily reconcile when RECONCILE_TIME is set).

    Several may run (a rolling deploy overlaps two): one leads, holding a lease in Redis, and the
    others stand by until it lapses."""
    app = build_app_or_exit(role="scheduler")  # first: a bad configuration is refused before the imports
    from jobs import events as event_jobs
    from jobs import reconcile as reconcile_jobs
    from jobs import retention as retention_jobs
    from jobs import sweep as sweep_jobs
    from webhook_service.web.services import get_services
    from webhook_service.workers import AppCronScheduler

    services = get_services(app)
    config = services.config
    hour, minute = config.sweep_time_utc.split(":")
    cron = AppCronScheduler(
        services.db,
        connection=services.queue.connection,
        queue_name=config.queue_name,
        lease_seconds=config.scheduler_lease_seconds,
    )
    cron.register(event_jobs.recover_events, queue_name=config.queue_name, interval=config.recovery_interval)
    # rq's cron strings are evaluated in UTC; missed runs are not caught up, so a sweep
    # skipped while the scheduler was down happens at the next time (or run sweep-past-due).
    cron.register(
        sweep_jobs.sweep_past_due, queue_name=config.queue_name, cron=f"{int(minute)} {int(hour)} * * *"
    )
    # The prune walks the log in short batches; a run cut short by the timeout continues next day.
    cron.register(
        retention_jobs.prune_events,
        queue_name=config.queue_name,
        cron=PRUNE_CRON,
        job_timeout=PRUNE_JOB_TIMEOUT_SECONDS,
    )
    reconciling = reconcile_jobs.schedule(cron, config)  # None when RECONCILE_TIME is unset
    schedule = (
        f"recovery every {config.recovery_interval}s, past-due sweep daily at {config.sweep_time_utc} UTC, "
        f"prune of events older than {config.event_retention_days} days daily at 03:30 UTC"
        + (f", {reconciling}" if reconciling else "")
        + f"; one scheduler leads (lease {config.scheduler_lease_seconds}s), others stand by"
    )
    click.echo(f"scheduler: {schedule}")
    startup.log_ready("scheduler", queue=config.queue_name, schedule=schedule)
    cron.start()


@cli.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Migration to upgrade to.")
def db_upgrade(revision: str) -> None:
    """Apply migrations to DATABASE_URL."""
    import sqlalchemy as sa

    from webhook_service.processing import db as dbmod

    config = startup.load_config_or_exit()
    database = dbmod.create_database(config.database_url)
    try:
        database.ping()
    except sa.exc.SQLAlchemyError as exc:
        startup.fail(f"cannot connect to DATABASE_URL: {type(exc).__name__}")
    dbmod.upgrade(config.database_url, revision)
    click.echo(f"database upgraded to {dbmod.current_revision(database.engine)}")


@cli.group()
def events() -> None:
    """Inspect the event log."""


#: EventStatus's values (spelt out: importing the models would load SQLAlchemy for `--help`).
_STATUSES = ["queued", "retrying", "processed", "ignored", "failed"]


def _event_filter(statuses, types, since, until, object_id=None) -> EventFilter:
    from webhook_service.processing.event_filter import EventFilter

    check_range(since, until)
    if types:
        import handlers

        warn_unknown_types(types, handlers.HANDLED_TYPES)
    return EventFilter(
        statuses=tuple(statuses), types=tuple(types), since=since, until=until, object_id=object_id
    )


def _event_row(row: StripeEvent) -> dict:
    return {
        "id": row.id,
        "type": row.type,
        "status": row.status,
        "attempts": row.attempts,
        "received": row.received_at,
        "error": error_first_line(row.last_error, 120),
    }


def _totals(session, flt: EventFilter) -> tuple[int, dict[str, int]]:
    import sqlalchemy as sa

    from webhook_service.core.models import StripeEvent

    stmt = flt.apply(sa.select(StripeEvent.status, sa.func.count()).group_by(StripeEvent.status))
    by_status = dict(session.execute(stmt).all())
    return sum(by_status.values()), by_status


def _events(count: int) -> str:
    return f"{count} event" if count == 1 else f"{count} events"


def _by_status(by_status: dict[str, int]) -> str:
    return ", ".join(f"{count} {status}" for status, count in sorted(by_status.items()))


@events.command("list")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(_STATUSES),
    help="Only events in this status; repeat for several.",
)
@click.option(
    "--type", "types", multiple=True, help="Only this event type (e.g. invoice.paid); repeat for several."
)
@click.option("--since", type=WHEN, help=f"Received at or after: {WHEN_HELP}.")
@click.option("--until", type=WHEN, help=f"Received before: {WHEN_HELP}.")
@click.option("--object", "object_id", help="Only events about this Stripe object (e.g. in_…).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1), help="Most rows to show.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
def events_list(statuses, types, since, until, object_id, limit: int, as_json: bool) -> None:
    """List events, newest first, with totals by status."""
    check_range(since, until)  # a usage error first, then the configuration, before the imports
    app = build_app_or_exit()
    flt = _event_filter(statuses, types, since, until, object_id)
    import sqlalchemy as sa

    from webhook_service.core.models import StripeEvent
    from webhook_service.web.services import get_services

    stmt = flt.apply(sa.select(StripeEvent)).order_by(StripeEvent.received_at.desc(), StripeEvent.id.desc())
    with get_services(app).db.sessions() as session:
        rows = [_event_row(row) for row in session.scalars(stmt.limit(limit))]
        total, by_status = _totals(session, flt) if len(rows) == limit else (len(rows), None)
    if as_json:
        print_table(rows, (), as_json=True)
        return
    if not rows:
        click.echo("No events match.")
        return
    print_table(rows, ("id", "type", "status", "attempts", "received", "error"), as_json=False)
    if by_status is None:
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        click.echo(f"{_events(total)} ({_by_status(counts)}).")
    elif total > len(rows):
        click.echo(f"Showing {len(rows)} of {total} ({_by_status(by_status)}); use --limit to see more.")
    else:
        click.echo(f"{_events(total)} ({_by_status(by_status)}).")


@events.command("show")
@click.argument("event_id")
@click.option(
    "--traceback",
    "with_traceback",
    is_flag=True,
    help="Also print where the last failure happened (frames and exception types only).",
)
@click.option("--no-payload", is_flag=True, help="Leave out the raw payload.")
def events_show(event_id: str, with_traceback: bool, no_payload: bool) -> None:
    """Show one event: status, attempts, last error and payload."""
    app = build_app_or_exit()  # first: a bad configuration is refused before the imports
    from webhook_service.core.models import StripeEvent
    from webhook_service.web.services import get_services

    with get_services(app).db.sessions() as session:
        row = session.get(StripeEvent, event_id)
        if row is None:
            startup.fail(f"event {event_id!r} is not in the event log")
        fields = {
            "id": row.id,
            "type": row.type,
            "status": row.status,
            "attempts": row.attempts,
            "api_version": row.api_version,
            "livemode": row.livemode,
            "account": row.account,
            "object_id": row.object_id,
            "created": row.created.isoformat() if row.created else None,
            "received_at": row.received_at.isoformat(),
            "processed_at": row.processed_at.isoformat() if row.processed_at else None,
            "next_attempt_at": row.next_attempt_at.isoformat() if row.next_attempt_at else None,
            "ignored_reason": row.ignored_reason,
            "last_error": error_summary(row.last_error) if row.last_error else None,
        }
        click.echo(json.dumps(fields, indent=2))
        if with_traceback:
            click.echo("traceback:")
            click.echo(
                row.last_traceback or "(none recorded: the event has not failed since tracebacks are kept)"
            )
        if no_payload:
            return
        click.echo("payload:")
        if row.payload_pruned_at is not None:
            click.echo(f"(removed by retention on {row.payload_pruned_at.isoformat(timespec='seconds')})")
        else:
            click.echo(json.dumps(json.loads(row.payload), indent=2))


@events.command("prune")
@click.option(
    "--older-than",
    "days",
    type=click.IntRange(min=MIN_RETENTION_DAYS),
    default=None,
    help="Age in days (at least 30); default EVENT_RETENTION_DAYS, which defaults to 90.",
)
@click.option("--dry-run", is_flag=True, help="Count what would be removed; change nothing.")
def events_prune(days: int | None, dry_run: bool) -> None:
    """Remove processed and ignored events older than the retention from the event log.

    Queued, retrying and failed events stay whatever their age; events a mirrored row names
    (status history, an invoice's or credit note's snapshot) keep their row without the payload.
    The scheduler runs this daily.
    """
    from webhook_service.processing import retention
    from webhook_service.web.services import get_services

    app = build_app_or_exit()
    services = get_services(app)
    days = days or services.config.event_retention_days
    started = time.monotonic()

    def progress(report) -> None:
        if report.batches % 20 == 0:
            click.echo(f"… {report.deleted + report.kept_ids} events so far", err=True)

    report = retention.prune_events(
        services.db, older_than_days=days, actor=current_actor(), dry_run=dry_run, progress=progress
    )
    cutoff = report.cutoff.isoformat(timespec="seconds")
    if dry_run:
        click.echo(
            f"Dry run: {report.deleted} events received before {cutoff} would be removed, and "
            f"{report.kept_ids} would keep their id without payload (mirrored rows name them); "
            "nothing changed."
        )
    else:
        click.echo(
            f"Removed {report.deleted} events received before {cutoff}; {report.kept_ids} kept their id "
            f"without payload (mirrored rows name them). {time.monotonic() - started:.1f} s."
        )


#: Replayed events listed one per line; beyond this, totals by type only.
_LIST_AT_MOST = 20


@cli.command()
@click.argument("event_ids", nargs=-1)
@click.option(
    "--failed",
    is_flag=True,
    help="Every failed event, and retrying events whose job is in RQ's failed registry.",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["failed", "retrying", "processed"]),
    help="Every event in this status (repeatable; processed needs --force).",
)
@click.option(
    "--type", "types", multiple=True, help="With --failed/--status: only this type; repeat for several."
)
@click.option("--since", type=WHEN, help=f"With --failed/--status: received at or after: {WHEN_HELP}.")
@click.option("--until", type=WHEN, help=f"With --failed/--status: received before: {WHEN_HELP}.")
@click.option("--dry-run", is_flag=True, help="Show what would be replayed; change nothing.")
@click.option("--force", is_flag=True, help="Also run events that were already processed.")
@click.option(
    "--wait/--no-wait",
    default=None,
    help="Follow the drains until every replayed event is done (default: only on a terminal).",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was (or would be) replayed as JSON.")
def replay(event_ids, failed, statuses, types, since, until, dry_run, force, wait, as_json) -> None:
    """Re-run events through the batch drains: EVT_ID…, --failed or --status.

    Exits 1 if a named event is not in the log, or a replayed event failed again while waiting.
    """
    import sqlalchemy as sa

    from webhook_service.core.models import StripeEvent
    from webhook_service.processing import replay as replaying
    from webhook_service.web.services import get_services

    by_filter = failed or bool(statuses)
    if bool(event_ids) == by_filter:
        raise click.UsageError("name event ids, or use --failed / --status (not both)")
    if (types or since or until) and not by_filter:
        raise click.UsageError("--type, --since and --until go with --failed or --status")
    if "processed" in statuses and not force:
        raise click.UsageError("--status processed re-runs processed events: add --force")
    app = build_app_or_exit()
    services = get_services(app)
    actor = current_actor()
    if by_filter:
        flt = _event_filter(tuple(dict.fromkeys(("failed",) * failed + statuses)), types, since, until)
        result = replaying.replay_matching(
            services.db,
            services.queue,
            flt,
            actor=actor,
            force=force,
            dry_run=dry_run,
            include_failed_registry=failed,
        )
    else:
        result = replaying.replay_ids(
            services.db, services.queue, event_ids, actor=actor, force=force, dry_run=dry_run
        )
    not_found = [event_id for event_id, why in result.skipped if why == "not in the event log"]
    with services.db.sessions() as session:
        listed = session.scalars(
            sa.select(StripeEvent).where(StripeEvent.id.in_(result.queued[:_LIST_AT_MOST]))
        )
        rows = {row.id: row for row in listed}
        by_type = _types_of(session, result.queued)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "dry_run": dry_run,
                    "events": result.queued,
                    "by_type": by_type,
                    "skipped": [{"id": i, "why": w} for i, w in result.skipped],
                },
                indent=2,
            )
        )
    else:
        for event_id in result.queued[:_LIST_AT_MOST]:
            row = rows[event_id]
            error = error_first_line(row.last_error)
            click.echo(
                f"replay {row.id}  {row.type}  ({row.attempts} attempts)" + (f" — {error}" if error else "")
            )
        if len(result.queued) > _LIST_AT_MOST:
            click.echo(f"… and {len(result.queued) - _LIST_AT_MOST} more (--json lists them all)")
        for event_id, why in result.skipped:
            click.echo(f"skip   {event_id}: {why}")
        if by_type:
            click.echo("by type: " + ", ".join(f"{count} {t}" for t, count in sorted(by_type.items())))
    if dry_run:
        if not as_json:
            click.echo(f"Dry run: {result.count} events would be re-enqueued; nothing changed.")
        sys.exit(1 if not_found else 0)
    if not result.queued:
        if not as_json:
            click.echo("Nothing to do.")
        sys.exit(1 if not_found else 0)
    if not as_json:
        click.echo(f"Re-enqueued {result.count} events.")
    failed_again = _follow_replay(services, result.queued, wait)
    sys.exit(1 if not_found or failed_again else 0)


def _types_of(session, ids) -> dict[str, int]:
    import sqlalchemy as sa

    from webhook_service.core.models import StripeEvent

    counts: dict[str, int] = {}
    for start in range(0, len(ids), 5000):
        stmt = (
            sa.select(StripeEvent.type, sa.func.count())
            .where(StripeEvent.id.in_(ids[start : start + 5000]))
            .group_by(StripeEvent.type)
        )
        for event_type, count in session.execute(stmt):
            counts[event_type] = counts.get(event_type, 0) + count
    return counts


def _follow_replay(services, ids: list[str], wait: bool | None) -> int:
    """Watch (or, without Redis, do) the drains' work on the replayed events; returns how many failed."""
    from webhook_service.core.models import EventStatus
    from webhook_service.processing import drain, pause
    from webhook_service.processing import replay as replaying

    if pause.get_state(services.db).paused:
        click.echo("Processing is paused: they run after `webhook-service resume`.")
        return 0
    embedded = services.config.embedded_queue
    if not embedded and not (sys.stdout.isatty() if wait is None else wait):
        return 0
    if embedded:
        click.echo("REDIS_URL is unset: draining them in this process.")
    pending = {EventStatus.QUEUED.value}
    state: dict[str, int] = {}

    def done() -> int:
        state.clear()
        state.update(replaying.pending_of(services.db, ids))
        return len(ids) - sum(count for status, count in state.items() if status in pending)

    def step() -> None:
        drain.drain(
            services.db,
            services.queue,
            services.config.drain_batch_size,
            max_batches=1,
            fetching=services.fetching,
        )

    finished = follow(len(ids), done, label="replaying", step=step if embedded else None)
    if finished < len(ids):
        click.echo(
            f"{len(ids) - finished} events are still queued: no worker took them for 60 s. "
            "They run once a worker is up (`webhook-service worker`)."
        )
    summary = {status: count for status, count in state.items() if count}
    click.echo("Replay finished: " + _by_status(summary) + ".")
    again = sum(summary.get(s, 0) for s in (EventStatus.FAILED.value, EventStatus.RETRYING.value))
    if again:
        click.echo(
            f"{again} failed again: `webhook-service events list --status failed --status retrying`.",
            err=True,
        )
    return again


@cli.command()
@click.option(
    "--since",
    required=True,
    type=WHEN,
    help=f"Events created at or after: {WHEN_HELP}; Stripe keeps 30 days.",
)
@click.option(
    "--type",
    "types",
    multiple=True,
    help="Only this event type; repeat for several (default: every type the service handles).",
)
@click.option("--dry-run", is_flag=True, help="Count what is missing; record nothing.")
def resync(since, types, dry_run: bool) -> None:
    """Backfill events the log is missing from Stripe's Events API."""
    import sqlalchemy as sa

    import handlers
    from webhook_service.processing import audit, eventlog
    from webhook_service.processing.resync import StripeAPIError, StripeEventsClient
    from webhook_service.processing.resync import resync as run_resync
    from webhook_service.web.services import get_services

    config = startup.load_config_or_exit()
    if not config.stripe_api_key:
        startup.fail(
            "STRIPE_API_KEY is not set: resync reads Stripe's Events API (a restricted key with events:read)"
        )
    warn_unknown_types(types, handlers.HANDLED_TYPES)
    chosen = sorted(set(types)) if types else sorted(handlers.HANDLED_TYPES)
    app = build_app_or_exit(config=config)
    services = get_services(app)
    budget = services.fetching.client.budget if services.fetching else None  # shared with the workers
    client = StripeEventsClient(config.stripe_api_key, config.stripe_api_base, budget=budget)
    parameters = {"since": since.isoformat(), "type": list(types), "dry_run": dry_run}
    try:
        report = run_resync(services.db, services.queue, client, since, chosen, config.accept_mode, dry_run)
    except StripeAPIError as exc:
        audit.record_action(
            services.db,
            actor=current_actor(),
            action="resync",
            parameters=parameters,
            result={"error": str(exc)[:300]},
        )
        startup.fail(str(exc))
    except (eventlog.EventLogUnavailable, sa.exc.SQLAlchemyError) as exc:
        startup.fail(
            f"the database stopped answering during resync ({error_first_line(str(exc), 200)}); events "
            "recorded so far are kept, and running the same resync again records only the rest"
        )
    audit.record_action(
        services.db,
        actor=current_actor(),
        action="resync",
        parameters=parameters,
        result={
            "listed": report.listed,
            "already_logged": report.already_logged,
            "recorded": report.recorded,
        },
    )
    if report.clamped:
        start = report.since.isoformat(timespec="seconds")
        click.echo(f"note: Stripe keeps events for 30 days; listing from {start}")
    recorded = sum(report.recorded.values())
    click.echo(f"Stripe listed {report.listed} events; {report.already_logged} already in the event log.")
    if dry_run:
        click.echo(f"Dry run: {report.missing} events would be recorded; nothing changed.")
        return
    detail = ", ".join(f"{count} {status}" for status, count in sorted(report.recorded.items()))
    click.echo(f"Recorded {recorded} events" + (f" ({detail})." if detail else "."))
    if recorded and config.embedded_queue:
        click.echo("REDIS_URL is unset: a running `serve` picks them up within 30 s.")


@cli.command("sweep-past-due")
def sweep_past_due_command() -> None:
    """Move open invoices whose due date has passed to past due, now (the scheduler does it daily)."""
    from webhook_service.processing.sweep import sweep_past_due
    from webhook_service.web.services import get_services

    app = build_app_or_exit()
    moved = sweep_past_due(get_services(app).db)
    click.echo(
        f"Moved {moved} invoices to past due."
        if moved
        else "Nothing to do: no open invoice is past its due date."
    )


@cli.command()
@click.option(
    "--fixtures",
    "fixtures_dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Directory of Stripe event JSON files to send (default: the bundled fixtures).",
)
@click.option("--seed", default=7, show_default=True, type=int, help="Shuffle seed for the delivery order.")
@click.option("--verbose", is_flag=True, help="Show the service's log lines (one per event).")
@click.option("--serve", is_flag=True, help="Keep serving afterwards, to open the console on the demo data.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port for --serve (on 127.0.0.1).")
def demo(fixtures_dir: str | None, seed: int, verbose: bool, serve: bool, port: int) -> None:
    """Send every fixture to a local receiver as Stripe would, then print the mirrored invoices."""
    from webhook_service.demo import DEFAULT_FIXTURES, run_demo

    if fixtures_dir is None and not DEFAULT_FIXTURES.is_dir():
        startup.fail(
            f"no fixture events at {DEFAULT_FIXTURES}: the demo sends the repository's fixtures/events, "
            "which an installed package does not include; run it from a source checkout "
            "(`make demo`) or pass --fixtures DIR (a folder of Stripe event JSON files)"
        )
    config = startup.load_config_or_exit(demo=True)
    level = "INFO" if verbose else "WARNING"
    sys.exit(run_demo(config, fixtures_dir, seed, log_level=level, serve_port=port if serve else None))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="webhook-service")


if __name__ == "__main__":
    main()

"""The `webhook-service` console script: one click group, each command builds the app first.

Commands import what they use when they run, so `--help` and argument errors cost no more than
click: the app stack (Flask, SQLAlchemy, RQ, psycopg) loads only for a command that needs it.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import click

from webhook_service import cli_operator, startup
from webhook_service.cli_support import build_app_or_exit
from webhook_service.core.errors import error_summary

#: How often the scheduler re-enqueues work a Redis restart may have lost.
RECOVERY_INTERVAL_SECONDS = 60


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


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Run the receiver with an in-process worker (development)."""
    from webhook_service.workers import EmbeddedWorker

    app = build_app_or_exit(role="serve")
    worker = EmbeddedWorker(app)
    worker.start()
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
    from webhook_service.processing import recovery
    from webhook_service.web.services import get_services
    from webhook_service.workers import build_worker

    app = build_app_or_exit(role="worker")
    services = get_services(app)
    recovery.recover(services.db, services.queue)  # pick up what an earlier crash or restart left behind
    rq_worker = build_worker(app, forking=not no_fork)
    startup.log_ready("worker", queue=services.config.queue_name, name=rq_worker.name)
    rq_worker.work(burst=burst, with_scheduler=True)


@cli.command()
def scheduler() -> None:
    """Run the periodic jobs (recovery every minute, the daily past-due sweep); run exactly one."""
    from rq.cron import CronScheduler

    from jobs import events as event_jobs
    from jobs import sweep as sweep_jobs
    from webhook_service.web.services import get_services

    app = build_app_or_exit(role="scheduler")
    services = get_services(app)
    config = services.config
    hour, minute = config.sweep_time_utc.split(":")
    cron = CronScheduler(connection=services.queue.connection)
    cron.register(event_jobs.recover_events, queue_name=config.queue_name, interval=RECOVERY_INTERVAL_SECONDS)
    # rq's cron strings are evaluated in UTC; missed runs are not caught up, so a sweep
    # skipped while the scheduler was down happens at the next time (or run sweep-past-due).
    cron.register(
        sweep_jobs.sweep_past_due, queue_name=config.queue_name, cron=f"{int(minute)} {int(hour)} * * *"
    )
    schedule = (
        f"recovery every {RECOVERY_INTERVAL_SECONDS}s, past-due sweep daily at {config.sweep_time_utc} UTC"
    )
    click.echo(f"scheduler: {schedule}")
    startup.log_ready("scheduler", queue=config.queue_name, schedule=schedule)
    cron.start()


@cli.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
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


def _parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"expected a date like 2026-11-01 or 2026-11-01T12:00, got {value!r}"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


@events.command("list")
@click.option("--status", type=click.Choice(["queued", "retrying", "processed", "ignored", "failed"]))
@click.option("--type", "event_type")
@click.option("--since", help="Received on or after this date (UTC).")
@click.option("--limit", default=50, show_default=True, type=int)
def events_list(status: str | None, event_type: str | None, since: str | None, limit: int) -> None:
    """List events, newest first."""
    import sqlalchemy as sa

    from webhook_service.core.models import StripeEvent
    from webhook_service.web.services import get_services

    since_at = _parse_since(since)
    app = build_app_or_exit()
    stmt = sa.select(StripeEvent).order_by(StripeEvent.received_at.desc()).limit(limit)
    if status:
        stmt = stmt.where(StripeEvent.status == status)
    if event_type:
        stmt = stmt.where(StripeEvent.type == event_type)
    if since_at:
        stmt = stmt.where(StripeEvent.received_at >= since_at)
    with get_services(app).db.sessions() as session:
        rows = session.scalars(stmt).all()
        if not rows:
            click.echo("No events match.")
            return
        for row in rows:
            click.echo(
                f"{row.id}  {row.type:<32} {row.status:<9} attempts={row.attempts} "
                f"received={row.received_at.isoformat(timespec='seconds')}"
                + (f"  error={error_summary(row.last_error)[:80]}" if row.last_error else "")
            )


@events.command("show")
@click.argument("event_id")
def events_show(event_id: str) -> None:
    """Show one event: status, attempts, last error and payload."""
    from webhook_service.core.models import StripeEvent
    from webhook_service.web.services import get_services

    app = build_app_or_exit()
    with get_services(app).db.sessions() as session:
        row = session.get(StripeEvent, event_id)
        if row is None:
            startup.fail(f"event {event_id!r} is not in the event log")
        fields = {
            "id": row.id, "type": row.type, "status": row.status, "attempts": row.attempts,
            "api_version": row.api_version, "livemode": row.livemode, "account": row.account,
            "object_id": row.object_id,
            "created": row.created.isoformat() if row.created else None,
            "received_at": row.received_at.isoformat(),
            "processed_at": row.processed_at.isoformat() if row.processed_at else None,
            "next_attempt_at": row.next_attempt_at.isoformat() if row.next_attempt_at else None,
            "ignored_reason": row.ignored_reason,
            "last_error": error_summary(row.last_error) if row.last_error else None,
        }  # fmt: skip
        click.echo(json.dumps(fields, indent=2))
        click.echo("payload:")
        click.echo(json.dumps(json.loads(row.payload), indent=2))


@cli.command()
@click.argument("event_ids", nargs=-1)
@click.option("--failed", is_flag=True, help="Replay every failed event (see --type, --since).")
@click.option("--type", "event_type", help="With --failed: only this event type.")
@click.option("--since", help="With --failed: only events received on or after this date (UTC).")
@click.option("--dry-run", is_flag=True, help="Show what would be replayed; change nothing.")
@click.option("--force", is_flag=True, help="Also run events that were already processed.")
def replay(
    event_ids, failed: bool, event_type: str | None, since: str | None, dry_run: bool, force: bool
) -> None:
    """Re-run events: EVT_ID… or --failed. Exits 1 if any could not be replayed."""
    from webhook_service.processing import replay as replaying
    from webhook_service.web.services import get_services

    if bool(event_ids) == failed:
        raise click.UsageError("name event ids, or use --failed (not both)")
    if (event_type or since) and not failed:
        raise click.UsageError("--type and --since go with --failed")
    since_at = _parse_since(since)
    app = build_app_or_exit()
    services = get_services(app)
    plan = replaying.plan_replay(
        services.db,
        services.queue,
        event_ids,
        failed=failed,
        event_type=event_type,
        since=since_at,
        force=force,
    )
    for row in plan.replay:
        error = f" — {error_summary(row.last_error)[:100]}" if row.last_error else ""
        click.echo(f"replay {row.id}  {row.type}  ({row.status}, {row.attempts} attempts){error}")
    for event_id, why in plan.skipped:
        click.echo(f"skip   {event_id}: {why}")
    not_found = [event_id for event_id, why in plan.skipped if why == "not in the event log"]
    if dry_run:
        click.echo(f"Dry run: {len(plan.replay)} events would be re-enqueued; nothing changed.")
        sys.exit(1 if not_found else 0)
    if not plan.replay:
        click.echo("Nothing to do.")
        sys.exit(1 if not_found else 0)
    if services.config.embedded_queue:
        click.echo("REDIS_URL is unset: processing in this process instead of enqueueing.")
        replaying.execute_replay_inline(services.db, plan)
        click.echo(f"Processed {len(plan.enqueued)} events.")
    else:
        replaying.execute_replay(services.db, services.queue, plan)
        click.echo(f"Re-enqueued {len(plan.enqueued)} events.")
    for event_id, error in plan.errors:
        click.echo(f"failed {event_id}: {error}", err=True)
    sys.exit(1 if plan.errors or not_found else 0)


@cli.command()
@click.option(
    "--since", required=True, help="Events created on or after this date (UTC); Stripe keeps 30 days."
)
@click.option("--type", "event_type", help="Only this event type (default: every type the service handles).")
@click.option("--dry-run", is_flag=True, help="Count what is missing; record nothing.")
def resync(since: str, event_type: str | None, dry_run: bool) -> None:
    """Backfill events the log is missing from Stripe's Events API."""
    import sqlalchemy as sa

    import handlers
    from webhook_service.processing import eventlog
    from webhook_service.processing.resync import StripeAPIError, StripeEventsClient
    from webhook_service.processing.resync import resync as run_resync
    from webhook_service.web.services import get_services

    since_at = _parse_since(since)
    assert since_at is not None  # --since is required
    config = startup.load_config_or_exit()
    if not config.stripe_api_key:
        startup.fail(
            "STRIPE_API_KEY is not set: resync reads Stripe's Events API (a restricted key with events:read)"
        )
    types = [event_type] if event_type else sorted(handlers.HANDLED_TYPES)
    if event_type and event_type not in handlers.HANDLED_TYPES:
        click.echo(f"note: {event_type} is not handled; its events are recorded as ignored")
    app = build_app_or_exit(config=config)
    services = get_services(app)
    budget = services.fetching.client.budget if services.fetching else None  # shared with the workers
    client = StripeEventsClient(config.stripe_api_key, config.stripe_api_base, budget=budget)
    try:
        report = run_resync(services.db, services.queue, client, since_at, types, config.accept_mode, dry_run)
    except StripeAPIError as exc:
        startup.fail(str(exc))
    except (eventlog.EventLogUnavailable, sa.exc.SQLAlchemyError) as exc:
        startup.fail(
            f"the database stopped answering during resync ({exc}); events recorded so far are kept, "
            "and running the same resync again records only the rest"
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
@click.option("--fixtures", "fixtures_dir", type=click.Path(exists=True, file_okay=False), default=None)
@click.option("--seed", default=7, show_default=True, type=int, help="Shuffle seed for the delivery order.")
@click.option("--verbose", is_flag=True, help="Show the service's log lines (one per event).")
def demo(fixtures_dir: str | None, seed: int, verbose: bool) -> None:
    """Send every fixture to a local receiver as Stripe would, then print the mirrored invoices."""
    from webhook_service.demo import DEFAULT_FIXTURES, run_demo

    if fixtures_dir is None and not DEFAULT_FIXTURES.is_dir():
        startup.fail(
            f"no fixture events at {DEFAULT_FIXTURES}: the demo sends the repository's fixtures/events, "
            "which an installed package does not include; run it from a source checkout "
            "(`make demo`) or pass --fixtures DIR (a folder of Stripe event JSON files)"
        )
    config = startup.load_config_or_exit(demo=True)
    sys.exit(run_demo(config, fixtures_dir, seed, log_level="INFO" if verbose else "WARNING"))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="webhook-service")


if __name__ == "__main__":
    main()

"""`webhook-service backfill`: years of history from Stripe's list endpoints (processing/backfill.py)."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from webhook_service import startup
from webhook_service.cli_support import (
    REFUSED_KEY,
    WHEN,
    WHEN_HELP,
    build_app_or_exit,
    current_actor,
    error_first_line,
)
from webhook_service.core.config import key_mode_conflict

if TYPE_CHECKING:  # loaded when the command runs, not for `--help`
    from click._termui_impl import ProgressBar

    from webhook_service.processing.backfill import BackfillReport, ListReport

#: Which lists `--only` takes, in the order they are read (processing/backfill.RESOURCES).
LISTS = ("customers", "invoices", "credit_notes")
#: Off a terminal, one progress line per this many pages of a list.
LINE_EVERY_PAGES = 10
#: Refused objects named in the totals, per list (the audit row keeps as many).
REFUSED_SHOWN = 10


@click.command("backfill")
@click.option(
    "--only",
    "only",
    multiple=True,
    type=click.Choice(LISTS),
    help="Only this list; repeat for several (default: customers, then invoices, then credit notes).",
)
@click.option("--since", type=WHEN, help=f"Only objects created at or after: {WHEN_HELP}.")
@click.option("--account", help="A Connect account (acct_…): its objects, asked for with Stripe-Account.")
@click.option("--dry-run", is_flag=True, help="Count what Stripe lists; record nothing, move no cursor.")
@click.option(
    "--restart", is_flag=True, help="Ignore an unfinished run's cursor: list from the newest again."
)
def backfill_command(only, since, account: str | None, dry_run: bool, restart: bool) -> None:
    """Record every customer, invoice and credit note Stripe has, for a drain to mirror.

    Resync reads the Events API's 30 days; this reads the objects themselves, however old. Each
    object becomes a snapshot event that the drains apply with the webhooks' ordering rules, so
    nothing newer from a webhook is overwritten. A killed run resumes after its last recorded
    page when run again; a finished one starts over.
    """
    if since is not None and since > datetime.now(UTC):
        raise click.UsageError(f"--since ({since.isoformat(timespec='seconds')}) is in the future")
    import redis
    import sqlalchemy as sa

    from webhook_service.core.errors import StripeAPIError, StripeUnavailable
    from webhook_service.processing import audit, eventlog
    from webhook_service.processing.backfill import (
        BackfillConflict,
        BackfillInterrupted,
        BackfillStopped,
        backfill,
        build_backfill_client,
    )
    from webhook_service.processing.stripe_client import is_live_key
    from webhook_service.web.services import get_services

    if account is not None and not (account.startswith("acct_") and len(account) > len("acct_")):
        raise click.BadParameter(
            f"expected a Connect account id like acct_1AbC…, got {account!r}", param_hint="--account"
        )
    config = startup.load_config_or_exit()
    if not config.stripe_api_key:
        startup.fail(
            "STRIPE_API_KEY is not set: backfill reads Stripe's list endpoints (a restricted key with "
            "read access to customers, invoices and credit notes)"
        )
    if conflict := key_mode_conflict(config):
        startup.fail(conflict)
    key_mode = "live" if is_live_key(config.stripe_api_key) else "test"
    services = get_services(build_app_or_exit(config=config))
    client = build_backfill_client(config, services.queue.connection)
    assert client is not None  # the key is set
    chosen = [name for name in LISTS if not only or name in only]
    parameters = {"only": chosen, "since": since.isoformat() if since else None, "account": account,
                  "dry_run": dry_run, "restart": restart, "mode": key_mode}  # fmt: skip
    try:  # first, so that even a SIGKILLed run leaves a row saying it started
        action_id = audit.start_action(services.db, actor=current_actor(), action="backfill",
                                       parameters=parameters)  # fmt: skip
    except sa.exc.SQLAlchemyError as exc:
        startup.fail(f"the database stopped answering ({error_first_line(str(exc), 200)})")
    shown = _Progress(dry_run)
    try:
        report = backfill(
            services.db, services.queue, client, resources=chosen, since=since, account=account,
            restart=restart, dry_run=dry_run, accept_mode=config.accept_mode, progress=shown.page,
        )  # fmt: skip
    except BackfillStopped as stopped:
        shown.close()
        cause = stopped.__cause__
        _print_totals(stopped.report)
        if isinstance(cause, StripeUnavailable) and cause.http_status in REFUSED_KEY:
            message = REFUSED_KEY[cause.http_status]
        elif isinstance(cause, BackfillConflict):
            message = str(cause)
        elif isinstance(cause, StripeAPIError):  # Stripe kept failing, or the shared budget is unreachable
            message = f"the backfill stopped: {error_first_line(str(cause), 200)}"
        elif isinstance(cause, eventlog.EventLogUnavailable | sa.exc.SQLAlchemyError):
            message = f"the database stopped answering ({error_first_line(str(cause), 200)})"
        elif isinstance(cause, redis.RedisError):  # what was committed is queued: recovery wakes a drain
            message = f"Redis stopped answering ({type(cause).__name__})"
        else:
            _audit(services.db, audit, action_id, stopped.report, error=type(cause).__name__)
            raise
        _audit(services.db, audit, action_id, stopped.report, error=message)
        startup.fail(
            f"{message}; what was recorded is kept: run the same command again to resume after it"
            if not dry_run
            else message
        )
    except KeyboardInterrupt as interrupted:
        shown.close()
        if isinstance(interrupted, BackfillInterrupted):
            _print_totals(interrupted.report)
            report = interrupted.report
            _audit(services.db, audit, action_id, report, error="interrupted", state="interrupted")
        else:  # before the backfill began: nothing done
            _audit_interrupted(services.db, audit, action_id)
        click.echo("Interrupted: what was recorded is kept; run the same command again to resume.", err=True)
        sys.exit(130)
    shown.close()
    _audit(services.db, audit, action_id, report)
    _print_totals(report)
    if report.recorded and config.embedded_queue:
        click.echo("REDIS_URL is unset: a running `serve` picks them up within 30 s.")


class _Progress:
    """A bar per list on a terminal (Stripe's lists do not say how long they are: the count and a
    moving mark); elsewhere a line every few pages, on stderr so stdout keeps the totals."""

    def __init__(self, dry_run: bool):
        self.tty = sys.stdout.isatty()
        self.dry_run = dry_run
        self.bar: ProgressBar | None = None
        self.resource: str | None = None
        self.pages = 0
        self.started = time.monotonic()

    def page(self, item: ListReport, count: int) -> None:
        if item.resource != self.resource:
            self.close()
            self.resource, self.pages, self.started = item.resource, 0, time.monotonic()
            if self.tty:
                verb = "counting" if self.dry_run else "recording"
                unknown_length = (_ for _ in ())  # no length hint: click shows the count alone
                bar = click.progressbar(unknown_length, label=f"{verb} {item.resource}", show_pos=True)
                self.bar = bar.__enter__()
        self.pages += 1
        if self.bar is not None:
            self.bar.update(count)
        elif self.pages % LINE_EVERY_PAGES == 0:
            rate = item.listed / max(time.monotonic() - self.started, 1e-9)
            click.echo(f"… {item.resource}: {item.listed} listed so far ({rate:,.0f}/s)", err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _print_totals(report: BackfillReport) -> None:
    scope = f" of {report.account}" if report.account else ""
    for item in report.lists:
        run = item.run_started_at.isoformat(timespec="seconds")
        if item.skipped:
            click.echo(f"{item.resource}{scope}: finished earlier in this backfill (the run of {run}).")
            continue
        where = (
            f"resumed the run of {run} after {item.listed_before} objects"
            if item.resumed
            else f"run of {run}"
        )
        state = "finished" if item.finished else "not finished"
        if report.dry_run:
            click.echo(f"{item.resource}{scope}: {item.listed} listed ({where}, {state}).")
            continue
        extra = []
        if item.duplicates:
            extra.append(f"{item.duplicates} already recorded by this run")
        if item.ignored:
            extra.append(f"{item.ignored} ignored (other mode)")
        if item.refused:
            extra.append(f"{len(item.refused)} refused (below)")
        if item.cursor_gone:
            extra.append("resumed at its last object's second, that object being gone")
        if item.lines_completed:
            extra.append(f"{item.lines_completed} with their lines completed")
        if item.lines_incomplete:
            extra.append(f"{len(item.lines_incomplete)} gone before their lines were read")
        detail = f"; {', '.join(extra)}" if extra else ""
        counts = f"{item.listed} listed, {item.recorded} recorded{detail}"
        click.echo(f"{item.resource}{scope}: {counts} ({where}, {state}).")
        for object_id, reason in list(item.refused.items())[:REFUSED_SHOWN]:
            shown_id = object_id if len(object_id) <= 60 else f"{object_id[:57]}…"
            click.echo(f"  refused {shown_id}: {error_first_line(reason, 160)}")
        if len(item.refused) > REFUSED_SHOWN:
            click.echo(f"  … and {len(item.refused) - REFUSED_SHOWN} more refused (the audit row lists them)")
    retried = f", {report.retries} retried" if report.retries else ""
    click.echo(f"{report.requests} request{'' if report.requests == 1 else 's'} to Stripe{retried}.")
    if report.dry_run:
        click.echo("Dry run: nothing recorded, no cursor moved.")
    elif report.recorded:
        click.echo(f"Recorded {report.recorded} snapshots; the drains mirror them.")


def _audit(
    db, audit, action_id: int, report: BackfillReport, error: str | None = None, state: str | None = None
) -> None:
    """Complete the run's audit row (written when it started) with what it did."""
    result: dict = {"state": state or ("stopped" if error else "finished")}
    for item in report.lists:
        result[item.resource] = {"listed": item.listed, "recorded": item.recorded,
                                 "duplicates": item.duplicates, "finished": item.finished}  # fmt: skip
        if item.refused:
            result[item.resource]["refused"] = audit.ids_parameter(item.refused)
    result["requests"] = report.requests
    if error:
        result["error"] = error
    try:
        audit.finish_action(db, action_id, result)
    except Exception:  # noqa: BLE001 - the database may be what failed; the command says so itself
        if error is None:
            raise


def _audit_interrupted(db, audit, action_id: int) -> None:
    try:
        audit.finish_action(db, action_id, {"state": "interrupted", "error": "interrupted"})
    except Exception:  # noqa: BLE001 - interrupted mid-statement: the row still says it started
        pass

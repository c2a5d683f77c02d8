"""`webhook-service reconcile`: compare the mirror with Stripe, report drift per field, repair it."""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime, timedelta

import click

from webhook_service import startup
from webhook_service.cli_support import (
    REFUSED_KEY,
    WHEN,
    WHEN_HELP,
    build_app_or_exit,
    current_actor,
    error_first_line,
    print_table,
)
from webhook_service.core.config import key_mode_conflict

#: Stripe's id shapes, checked before any request (a typo would compare nothing and say "no drift").
_CUSTOMER_ID = re.compile(r"^cus_[A-Za-z0-9]+$")
_ACCOUNT_ID = re.compile(r"^acct_[A-Za-z0-9]+$")


def _checked_id(pattern: re.Pattern, example: str):
    def check(ctx, param, value):
        if value is not None and not pattern.match(value):
            raise click.BadParameter(f"expected a Stripe id like {example}, got {value!r}")
        return value

    return check


@click.command("reconcile")
@click.option(
    "--since",
    type=WHEN,
    help=f"Invoices created at or after: {WHEN_HELP}; default RECONCILE_DAYS (60) days ago.",
)
@click.option(
    "--customer",
    "customer_id",
    metavar="CUS_ID",
    callback=_checked_id(_CUSTOMER_ID, "cus_123"),
    help="Only this customer's invoices (cus_…).",
)
@click.option(
    "--account",
    metavar="ACCT_ID",
    callback=_checked_id(_ACCOUNT_ID, "acct_123"),
    help="A Connect account's invoices (acct_…); default: the platform's own.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Compare at most N invoices, newest first.")
@click.option(
    "--repair",
    is_flag=True,
    help="Record Stripe's copies of what drifted as events and wake a drain, which applies them as "
    "it applies webhooks.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def reconcile_command(since, customer_id, account, limit, repair: bool, as_json: bool) -> None:
    """Compare mirrored invoices and credit balances with Stripe's, field by field.

    Lists Stripe's invoices created in the window (GET /v1/invoices) and fetches the customers
    they name; compares status, subtotal, tax, total, amount due/paid/remaining, credit applied
    and each customer's credit per currency with what the mirror holds, as the mirror would read
    Stripe's copy (past_due is the mirror's refinement of open, not drift). Also reports invoices
    Stripe has that the mirror lacks (missing) and mirrored ones Stripe no longer has (gone).
    Needs STRIPE_API_KEY (read access to invoices and customers).

    Exit status: 0 no drift; 1 drift found (with --repair too: run reconcile again once the drain
    has applied the repair, to see it gone); 2 the run could not be made (configuration, Stripe
    or the database failing).
    """
    now = datetime.now(UTC)
    if since is not None and since > now:
        raise click.UsageError(f"--since ({since.isoformat(timespec='seconds')}) is in the future")
    import sqlalchemy as sa

    from webhook_service.core.errors import StripeAPIError, StripeUnavailable
    from webhook_service.processing import reconcile
    from webhook_service.processing.eventlog import EventLogUnavailable
    from webhook_service.web.services import get_services

    config = startup.load_config_or_exit()
    if not config.stripe_api_key:
        startup.fail(
            "STRIPE_API_KEY is not set: reconcile reads Stripe's invoices and customers "
            "(a restricted key with read access to both is enough)"
        )
    if conflict := key_mode_conflict(config):
        startup.fail(conflict)
    app = build_app_or_exit(config=config)
    services = get_services(app)
    client = reconcile.build_reconcile_client(config, services.queue.connection)
    assert client is not None  # the key is set
    window = reconcile.Window(
        since=since or now - timedelta(days=config.reconcile_days),
        customer=customer_id,
        account=account,
        limit=limit,
    )
    try:
        report = reconcile.reconcile(
            services.db,
            services.queue,
            client,
            window,
            actor=current_actor(),
            repair=repair,
            accept_mode=config.accept_mode,
        )
    except StripeUnavailable as exc:
        if exc.http_status in REFUSED_KEY:
            startup.fail(f"reconcile stopped: {REFUSED_KEY[exc.http_status]}")
        startup.fail(f"reconcile stopped: {error_first_line(str(exc), 200)}")
    except StripeAPIError as exc:
        startup.fail(f"reconcile stopped: {error_first_line(str(exc), 200)}")
    except (sa.exc.SQLAlchemyError, EventLogUnavailable) as exc:
        startup.fail(
            f"reconcile stopped, the database failed ({type(exc).__name__}); run it again once it answers "
            "(a repair recorded only in part is completed by the rerun)"
        )
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print_report(report, embedded=config.embedded_queue)
    sys.exit(1 if report.drift_found else 0)


def _print_report(report, *, embedded: bool) -> None:
    window = report.window
    scope = f"account {window.account}" if window.account else "the platform account"
    who = f", customer {window.customer}" if window.customer else ""
    cut = f", at most {window.limit}" if window.limit else ""
    compared = f"{_count(report.invoices, 'invoice')} and {_count(report.customers, 'customer')}"
    click.echo(
        f"Compared {compared} with Stripe "
        f"(created since {window.since.isoformat(timespec='seconds')}, {scope}{who}{cut}); "
        f"run {report.run_id}."
    )
    if not report.drift_found:
        click.echo("No drift: the mirror agrees with Stripe.")
        return
    rows = [
        {"field": name, "count": count, "examples": "; ".join(map(_example, report.drift[name].examples))}
        for name, count in report.counts().items()
    ]
    print_table(rows, ("field", "count", "examples"), as_json=False)
    click.echo("(examples: id mirror → Stripe)")
    if report.repair:
        click.echo(
            f"Recorded {report.repaired} of Stripe's objects as events for the drains"
            + (f" (not recorded: {_reasons(report.not_recorded)})" if report.not_recorded else "")
            + ". Run `webhook-service reconcile` again once they are processed, to confirm."
        )
        if embedded:
            click.echo("REDIS_URL is unset: a running `serve` picks them up within 30 s.")
    else:
        click.echo(
            "Drift found. `webhook-service reconcile --repair` records Stripe's copies for the drains."
        )
    if "gone" in report.drift:
        click.echo("Gone invoices cannot be repaired from Stripe: it has no object left to record.")


def _example(example: dict) -> str:
    if "field" in example:
        return f"{example['id']}: unreadable at {example['field']}"
    where = f"{example['id']} {example['currency']}" if example.get("currency") else example["id"]
    return f"{where}: {_value(example['mirror'])} → {_value(example['stripe'])}"


def _value(value) -> str:
    return "(none)" if value is None else str(value)


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{count} {reason}" for reason, count in counts.items())


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"

"""Operator commands: pause, resume, the audit trail and send (registered on the `webhook-service` group)."""

from __future__ import annotations

import json
from datetime import datetime

import click

from webhook_service.cli_support import (
    WHEN,
    WHEN_HELP,
    build_app_or_exit,
    check_range,
    current_actor,
    print_table,
)


def _when(at: datetime | None) -> str:
    return at.isoformat(timespec="seconds") if at else "an unknown time"


@click.command("pause")
@click.option("--reason", help="Why, for the audit trail and /readyz (e.g. 'database maintenance').")
def pause_command(reason: str | None) -> None:
    """Stop processing at the next batch boundary; the receiver keeps recording events."""
    from webhook_service.processing import pause
    from webhook_service.web.services import get_services

    services = get_services(build_app_or_exit())
    state = pause.pause(services.db, actor=current_actor(), reason=reason)
    click.echo(
        f"Processing paused since {_when(state.since)} by {state.by}; "
        "no batch is in flight. Deliveries are still recorded; `webhook-service resume` drains them."
    )


@click.command("resume")
def resume_command() -> None:
    """Let drains run again; a drain starts on the backlog at once."""
    from webhook_service.processing import pause
    from webhook_service.web.services import get_services

    services = get_services(build_app_or_exit())
    was = pause.get_state(services.db)
    pause.resume(services.db, services.queue, actor=current_actor())
    if not was.paused:
        click.echo("Processing was not paused; a drain was started anyway.")
    else:
        click.echo(f"Processing resumed (paused since {_when(was.since)} by {was.by}).")
    if services.config.embedded_queue:
        click.echo("REDIS_URL is unset: a running `serve` picks the backlog up within 30 s.")


@click.command("audit")
@click.option("--action", help="Only this action (replay, resync, pause, resume, prune, …).")
@click.option("--actor", "by", help="Only actions by this actor (e.g. cli:alice, console:ops, scheduler).")
@click.option("--since", type=WHEN, help=f"Actions at or after this time: {WHEN_HELP}.")
@click.option("--until", type=WHEN, help=f"Actions before this time: {WHEN_HELP}.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1), help="Most rows to show.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
def audit_command(action, by, since, until, limit: int, as_json: bool) -> None:
    """Operator actions, newest first: who did what, when, with which parameters."""
    from webhook_service.processing import audit
    from webhook_service.web.services import get_services

    check_range(since, until)
    services = get_services(build_app_or_exit())
    rows, total = audit.list_actions(
        services.db, limit=limit, action=action, actor=by, since=since, until=until
    )
    table = [
        {
            "id": r.id,
            "at": r.at,
            "actor": r.actor,
            "action": r.action,
            "parameters": r.parameters,
            "result": r.result,
        }
        for r in rows
    ]
    if as_json:
        print_table(table, (), as_json=True)
        return
    if not rows:
        click.echo("No operator actions match.")
        return
    for row in table:
        row["parameters"] = _compact(row["parameters"])
        row["result"] = _compact(row["result"])
    print_table(table, ("at", "actor", "action", "parameters", "result"), as_json=False)
    click.echo(_shown(len(rows), total))


def _compact(value) -> str:
    if not value:
        return "-"
    return " ".join(f"{k}={v}" for k, v in value.items())


def _shown(shown: int, total: int) -> str:
    return f"{total} in all." if shown == total else f"Showing {shown} of {total}; use --limit to see more."


@click.command("send")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--type",
    "types",
    multiple=True,
    help="Send a new event of this type (fresh id, created now), built from its newest fixture; repeatable.",
)
@click.option(
    "--url",
    default="http://127.0.0.1:8000/webhooks/stripe",
    show_default=True,
    help="The receiver's webhook URL.",
)
@click.option("--secret", help="Signing secret (whsec_…); default: the first of STRIPE_WEBHOOK_SECRETS.")
@click.option(
    "--fixtures",
    "fixtures_dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Where --type finds its templates (default: the repository's fixtures/events).",
)
def send_command(files, types, url: str, secret: str | None, fixtures_dir: str | None) -> None:
    """Sign events as Stripe does and POST them to a running receiver (FILE… and/or --type T).

    Exits 1 if any delivery was not answered 2xx.
    """
    import os
    from pathlib import Path

    import requests

    from webhook_service import send
    from webhook_service.core.config import parse_secrets
    from webhook_service.core.errors import ConfigError

    if not files and not types:
        raise click.UsageError("name fixture files, or --type EVENT_TYPE")
    if secret is None:
        try:
            configured = parse_secrets(os.environ.get("STRIPE_WEBHOOK_SECRETS"))
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
        if not configured:
            raise click.UsageError("no secret: pass --secret whsec_… or set STRIPE_WEBHOOK_SECRETS")
        secret = configured[0]
    bodies = [Path(path).read_bytes() for path in files]
    if types:
        from webhook_service.demo import DEFAULT_FIXTURES

        where = Path(fixtures_dir) if fixtures_dir else DEFAULT_FIXTURES
        try:
            bodies += [json.dumps(send.generate(t, where)).encode() for t in types]
        except LookupError as exc:
            raise click.UsageError(str(exc)) from None
    for body in bodies[: len(files)]:
        try:
            json.loads(body)
        except ValueError:
            raise click.UsageError("a file is not JSON: send takes Stripe event JSON files") from None
    try:
        sent = send.send_all(url, secret, bodies)
    except requests.RequestException as exc:
        raise click.ClickException(
            f"cannot reach {url} ({type(exc).__name__}); is the receiver running (`make run`, "
            "`webhook-service serve`)?"
        ) from None
    for item in sent:
        click.echo(f"{item.status}  {item.event_id}  {item.event_type}  {item.body.strip()[:200]}")
    bad = [item for item in sent if not 200 <= item.status < 300]
    click.echo(f"Sent {len(sent)} events; {len(sent) - len(bad)} accepted.")
    if bad:
        raise SystemExit(1)


COMMANDS = (pause_command, resume_command, audit_command, send_command)

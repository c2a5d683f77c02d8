"""`webhook-service demo`: the embedded service end to end, driven over HTTP as Stripe would."""

from __future__ import annotations

import json
import logging
import random
import secrets
import threading
import time
from pathlib import Path

import click
import requests
import sqlalchemy as sa
from werkzeug.serving import make_server

from webhook_service.core.config import Config, OperatorKey
from webhook_service.core.models import Customer, Invoice, Notification
from webhook_service.core.signature import sign
from webhook_service.processing import drain, eventlog
from webhook_service.processing.sweep import sweep_past_due
from webhook_service.web.services import get_services

#: The repository's fixtures, next to the package in a source checkout. A wheel does not ship them
#: (they are test data, and grow with every API era): an installed `demo` needs `--fixtures DIR`.
DEFAULT_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "events"
#: Stories the demo adds to them (fixtures/make_fixtures.py): a customer with credit in two currencies.
DEMO_SCENARIOS = DEFAULT_FIXTURES.parent / "scenarios"
#: How long the demo waits for the worker to mirror everything it sent.
PROCESSING_TIMEOUT_SECONDS = 60
#: Every n-th event is delivered twice, as Stripe sometimes does.
REDELIVER_EVERY = 4


def load_fixture_bodies(folder: Path) -> list[bytes]:
    """The raw bodies of every fixture event, in file order."""
    files = sorted(folder.rglob("*.json"))
    return [path.read_bytes() for path in files]


def _money(amount: int | None, currency: str | None) -> str:
    if amount is None:
        return "-"
    return f"{amount / 100:,.2f} {(currency or '').upper()}"


def _table(header: tuple, rows: list[tuple], right_from: int) -> str:
    table = [header] + rows
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    lines = []
    for index, row in enumerate(table):
        cells = [
            str(cell).rjust(w) if i >= right_from else str(cell).ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_invoice_table(session) -> str:
    """The mirrored invoices as a text table."""
    rows = session.execute(
        sa.select(Invoice, Customer.name)
        .join(Customer, Customer.id == Invoice.customer_id, isouter=True)
        .where(Invoice.deleted_at.is_(None))
        .order_by(Customer.name, Invoice.created_at)
    ).all()
    header = ("number", "customer", "status", "total", "credit", "amount remaining")
    return _table(
        header,
        [
            (
                inv.number or f"(draft {inv.id[-6:]})",
                name or inv.customer_id or "-",
                inv.status,
                _money(inv.total, inv.currency),
                # From the balance at finalization, plus credit notes before and after payment.
                _money(
                    inv.credit_applied
                    + inv.pre_payment_credit_notes_amount
                    + inv.post_payment_credit_notes_amount,
                    inv.currency,
                ),
                _money(inv.amount_remaining, inv.currency),
            )
            for inv, name in rows
        ],
        right_from=3,
    )


def render_credit_table(session) -> str:
    """Customers with their entity and credit per currency, each followed by the ledger rows behind it.

    The first line is the credit in the customer's own currency; credit in any other currency gets
    a line of its own, never a sum (a EUR credit is not a USD one).
    """
    customers = session.scalars(sa.select(Customer).order_by(Customer.name)).all()
    header = ("customer / ledger", "entity / source", "credit")
    rows = []
    for customer in customers:
        entity = customer.entity_type + (f" {customer.entity_id}" if customer.entity_id else "")
        rows.append(
            (customer.name or customer.id, entity, _money(customer.credit_balance, customer.currency))
        )
        for currency, amount in customer.credit_balances.items():
            if currency != customer.currency:
                rows.append((f"  credit in {currency.upper()}", "", _money(amount, currency)))
        own_first = sorted(customer.ledger, key=lambda e: (e.currency != customer.currency, e.currency or ""))
        for entry in own_first:
            rows.append(
                (
                    f"  {entry.kind}",
                    f"  {entry.source_type} {entry.source_id}",
                    _money(entry.amount, entry.currency),
                )
            )
    return _table(header, rows, right_from=2)


def render_notification_table(session) -> str:
    """Past-due notifications as a text table."""
    rows = session.execute(
        sa.select(Notification, Invoice.number)
        .join(Invoice, Invoice.id == Notification.invoice_id)
        .order_by(Invoice.number, Notification.audience)
    ).all()
    header = ("invoice", "audience", "kind", "since", "days past due", "amount remaining")
    return _table(
        header,
        [
            (
                number,
                note.audience,
                note.kind,
                note.created_at.date().isoformat(),
                "-" if note.days_past_due is None else note.days_past_due,
                _money(note.amount_remaining, note.currency),
            )
            for note, number in rows
        ],
        right_from=4,
    )


def _serve_console(config: Config, port: int, thread: threading.Thread) -> None:
    """Keep the demo's server up for the console until Ctrl-C."""
    key = config.operator_keys[0]
    click.echo(f"\nConsole: http://127.0.0.1:{port}/console/ (log in as {key.name!r})")
    if key.name == "demo":
        click.echo(f"Operator key for this run: {key.key}")
    click.echo("Serving until Ctrl-C.")
    try:
        while thread.is_alive():
            thread.join(1)
    except KeyboardInterrupt:
        click.echo("stopped")


def run_demo(
    config: Config,
    fixtures_dir: str | None,
    seed: int,
    log_level: str = "WARNING",
    serve_port: int | None = None,
) -> int:
    """Start the embedded service, deliver the fixtures, wait, print. Returns the exit status.

    With `serve_port`, keep serving on it afterwards (until Ctrl-C) so the console can be opened on
    the demo data; without OPERATOR_KEYS a one-off key is made and printed.
    """
    from webhook_service.startup import build_app_or_exit
    from webhook_service.workers import EmbeddedWorker

    secret = config.webhook_secrets[0] if config.webhook_secrets else f"whsec_demo{secrets.token_hex(16)}"
    config = config.with_overrides(
        webhook_secrets=(secret,) + config.webhook_secrets[1:], log_level=log_level
    )
    if serve_port is not None and not config.operator_keys:
        config = config.with_overrides(operator_keys=(OperatorKey("demo", secrets.token_urlsafe(18)),))
    app = build_app_or_exit(config=config, auto_upgrade=True, http=True)  # it serves the receiver
    services = get_services(app)
    worker = EmbeddedWorker(app)
    worker.start()
    server = make_server("127.0.0.1", serve_port or 0, app, threaded=True)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access line per delivery drowns the table
    thread = threading.Thread(target=server.serve_forever, name="demo-http", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/webhooks/stripe"
    try:
        bodies = load_fixture_bodies(Path(fixtures_dir) if fixtures_dir else DEFAULT_FIXTURES)
        if not fixtures_dir and DEMO_SCENARIOS.is_dir():
            bodies += load_fixture_bodies(DEMO_SCENARIOS)
        if not bodies:
            click.echo("No fixture events found.", err=True)
            return 1
        deliveries = bodies + bodies[::REDELIVER_EVERY]
        random.Random(seed).shuffle(deliveries)
        click.echo(
            f"Delivering {len(deliveries)} signed events ({len(bodies)} distinct, in shuffled order) to {url}"
        )
        counts = {"accepted": 0, "duplicate": 0, "error": 0}
        with requests.Session() as http:
            for body in deliveries:
                response = http.post(
                    url, data=body,
                    headers={"Content-Type": "application/json", "Stripe-Signature": sign(body, secret)},
                    timeout=10,
                )  # fmt: skip
                if response.status_code != 200:
                    counts["error"] += 1
                    click.echo(f"  {response.status_code}: {response.text.strip()}", err=True)
                elif response.json().get("duplicate"):
                    counts["duplicate"] += 1
                else:
                    counts["accepted"] += 1
        click.echo(
            f"Stripe got 2xx for {counts['accepted'] + counts['duplicate']} deliveries "
            f"({counts['duplicate']} recognised as duplicates), {counts['error']} errors"
        )
        deadline = time.monotonic() + PROCESSING_TIMEOUT_SECONDS
        while (pending := drain.pending_count(services.db)) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pending:
            click.echo(f"{pending} events still unprocessed after {PROCESSING_TIMEOUT_SECONDS}s", err=True)
        moved = sweep_past_due(services.db)
        click.echo(
            f"Daily past-due sweep, run now as the scheduler would: {moved} invoice(s) moved to past due"
        )
        with services.db.sessions() as session:
            statuses = eventlog.count_by_status(session)
            click.echo(f"Event log: {json.dumps(statuses, sort_keys=True)}\n")
            click.echo(render_invoice_table(session))
            click.echo("\nPast-due notifications:\n")
            click.echo(render_notification_table(session))
            click.echo("\nCustomer credit:\n")
            click.echo(render_credit_table(session))
        status = 0 if not pending and not counts["error"] else 1
        if serve_port is not None:
            _serve_console(config, server.server_port, thread)
        return status
    finally:
        server.shutdown()
        worker.stop()

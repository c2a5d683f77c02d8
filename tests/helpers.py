"""Helpers shared by tests: run real workers, and read the mirror back as comparable data."""

from __future__ import annotations

import os

import sentry_sdk
import sqlalchemy as sa

from webhook_service.core.models import (
    CreditLedgerEntry,
    CreditNote,
    Customer,
    CustomerBalance,
    Invoice,
    InvoiceLine,
    InvoiceStatusChange,
    Notification,
    StripeEvent,
)
from webhook_service.web.services import get_services
from webhook_service.workers import build_worker

#: Our own bookkeeping, not mirrored data: excluded when comparing two mirrors.
_BOOKKEEPING = {"updated_at", "created_at_row", "recorded_at", "id_history"}


def run_worker(app, *, forking: bool = False) -> None:
    """Run a real RQ worker (with its scheduler) on the app's queue until the queue is empty."""
    build_worker(app, forking=forking).work(burst=True, with_scheduler=True, logging_level="WARNING")


#: What the shell may carry that would change the configuration under test (or, SENTRY_DSN, leave
#: a Sentry client on in this process): removed for `invoke_cli`, as `run_cli` leaves them out.
_CLI_ENV_PREFIXES = ("STRIPE_", "DATABASE_", "REDIS_", "PORTAL_", "SENTRY_", "WEBHOOK_SERVICE_")


def invoke_cli(*args: str, env: dict[str, str] | None = None):
    """Run `webhook-service ARGS` in this process (click's runner): its exit code, stdout and
    stderr, without the second of CPU a new interpreter spends importing the stack. The
    environment is this process's without the service's variables, plus `env`.
    tests/test_cli.py runs the console script as a real process."""
    from click.testing import CliRunner

    from webhook_service.cli import cli

    scrubbed: dict[str, str | None] = {k: None for k in os.environ if k.startswith(_CLI_ENV_PREFIXES)}
    scrubbed["LOG_LEVEL"] = "WARNING"
    return CliRunner().invoke(cli, list(args), env={**scrubbed, **(env or {})}, catch_exceptions=False)


def disable_sentry() -> None:
    """Back to no Sentry client, as in a process without SENTRY_DSN, after a test that enabled it.

    `sentry_sdk.init(dsn=None)` is not that: it installs an active client with every default
    integration, which then records the queries, requests and errors of every later test in the
    process (a tenth of the fast lane's CPU) and sends them nowhere.
    """
    sentry_sdk.flush()
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)


def _row(obj, skip=()) -> tuple:
    return tuple(
        (column.key, getattr(obj, column.key))
        for column in obj.__table__.columns
        if column.key not in _BOOKKEEPING and column.key not in skip
    )


def mirror_state(app) -> dict:
    """Everything the portal reads, minus our timestamps, in a stable order."""
    with get_services(app).db.sessions() as session:
        return {
            "invoices": [_row(i) for i in session.scalars(sa.select(Invoice).order_by(Invoice.id))],
            "lines": [
                _row(line)
                for line in session.scalars(
                    sa.select(InvoiceLine).order_by(InvoiceLine.invoice_id, InvoiceLine.position)
                )
            ],
            "history": [
                _row(change, skip=("id",))
                for change in session.scalars(
                    sa.select(InvoiceStatusChange).order_by(
                        InvoiceStatusChange.invoice_id, InvoiceStatusChange.rank
                    )
                )
            ],
            "customers": [
                _row(c, skip=("created_at",))
                for c in session.scalars(sa.select(Customer).order_by(Customer.id))
            ],
            "credit_notes": [_row(n) for n in session.scalars(sa.select(CreditNote).order_by(CreditNote.id))],
            "ledger": sorted(_row(e, skip=("id",)) for e in session.scalars(sa.select(CreditLedgerEntry))),
            "balances": sorted(_row(b) for b in session.scalars(sa.select(CustomerBalance))),
            "notifications": sorted(_row(n, skip=("id",)) for n in session.scalars(sa.select(Notification))),
        }


def event_rows(app) -> dict[str, StripeEvent]:
    with get_services(app).db.sessions() as session:
        return {row.id: row for row in session.scalars(sa.select(StripeEvent))}


def invoices_by_number(app) -> dict[str, Invoice]:
    with get_services(app).db.sessions() as session:
        rows = session.scalars(sa.select(Invoice)).all()
        return {row.number or row.id: row for row in rows}


def deliver_payment_before_its_invoice(app, stripe) -> str:
    """Delivers and processes an `invoice_payment.paid` alone (no invoice event before it) and
    returns the id of the invoice it names: the placeholder row the API and console leave out."""
    import json
    from pathlib import Path

    path = (
        Path(__file__).resolve().parent.parent / "fixtures/eras/2025-10-29.clover/invoice_payment.paid.json"
    )
    event = json.loads(path.read_text())
    assert stripe.post(event).status_code == 200
    run_worker(app)
    invoice = event["data"]["object"]["invoice"]
    return invoice["id"] if isinstance(invoice, dict) else invoice


def examples(count: int) -> int:
    """`count` hypothesis examples, or fewer under a profile that caps them (`make test-fast`)."""
    from hypothesis import settings

    return min(count, settings.default.max_examples)


def like_query_plans(engine, call) -> list[str]:
    """PostgreSQL's plans for the LIKE queries `call()` runs on `engine`, sequential scans disfavoured
    (so a plan that could use an index shows it even on a test-sized table)."""
    seen: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if " LIKE " in statement:
            seen.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        response = call()
        assert response.status_code == 200, response.status_code
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    plans = []
    with engine.connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")
        for statement, parameters in seen:
            rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters)
            plans.append("\n".join(row[0] for row in rows))
    return plans

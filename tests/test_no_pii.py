"""No customer data leaves through errors: logs, last_error, the read API, RQ and Sentry.

A handler's write fails with the customer's email and name as bound parameters; PostgreSQL echoes
the row in its DETAIL line and SQLAlchemy appends `[SQL: …] [parameters: {…}]` to its message. The
event is retried until its retries are spent (when RQ's Sentry integration reports it), and
every byte captured on the way is searched for the customer's email, name and payload values.
"""

from __future__ import annotations

import logging
import time

import pytest
import sentry_sdk
import sqlalchemy as sa
from rq.job import Job
from rq.registry import FailedJobRegistry

import handlers
from tests.helpers import disable_sentry, event_rows, run_worker
from webhook_service.web.observability import init_sentry

KEY = "portal-key-no-pii-0123456789"


class CaptureTransport(sentry_sdk.transport.Transport):
    """A local Sentry sink: keeps every envelope the SDK would send."""

    def __init__(self):
        super().__init__()
        self.envelopes: list = []

    def capture_envelope(self, envelope):
        self.envelopes.append(envelope)

    def text(self) -> str:
        out = []
        for envelope in self.envelopes:
            for item in envelope.items:
                out.append(item.payload.get_bytes().decode("utf-8", "replace"))
        return "\n".join(out)


@pytest.fixture
def config_overrides():
    return {"portal_api_keys": (KEY,)}


@pytest.fixture
def sentry_sink(services):
    transport = CaptureTransport()
    init_sentry(services.config, transport=transport)
    yield transport
    disable_sentry()


def _secrets_of(event: dict) -> list[str]:
    invoice = event["data"]["object"]
    return [invoice["customer_email"], invoice["customer_name"], invoice["customer_email"].split("@")[0]]


def test_a_failing_event_leaks_no_customer_data_anywhere(
    app, services, stripe, fixture_events, monkeypatch, sentry_sink, caplog, capfd
):
    event = next(e for e in fixture_events if e["data"]["object"].get("customer_email"))
    secrets = _secrets_of(event)
    real = handlers.EVENT_HANDLERS[event["type"]]

    def handler(event_, session):  # a write the database refuses, with customer data as its value
        if event_["id"] == event["id"]:
            customer = event_["data"]["object"]
            session.execute(  # NOT NULL id: refused by both databases, echoing the row's values
                sa.text("INSERT INTO customers (id, email, name) VALUES (NULL, :email, :name)"),
                {"email": customer["customer_email"], "name": customer["customer_name"]},
            )
        return real(event_, session)

    monkeypatch.setitem(handlers.EVENT_HANDLERS, event["type"], handler)
    caplog.set_level(logging.DEBUG)
    assert stripe.post(event).status_code == 200
    for _ in range(len(services.config.retry_intervals) + 1):  # first attempt, then each retry
        run_worker(app)
        time.sleep(1.1)
    run_worker(app)
    row = event_rows(app)[event["id"]]
    assert row.status == "failed"
    assert FailedJobRegistry(queue=services.queue.queue).get_job_ids() == [event["id"]]
    sentry_sdk.flush()

    # The error keeps its type and the first line of the server's message, and nothing else.
    assert row.last_error.startswith("IntegrityError: ("), row.last_error
    assert "[SQL" not in row.last_error and "[parameters" not in row.last_error

    api = app.test_client().get(f"/api/v1/events/{event['id']}", headers={"Authorization": f"Bearer {KEY}"})
    assert api.status_code == 200
    job = FailedJobRegistry(queue=services.queue.queue).get_job_ids()[0]
    rq_text = Job.fetch(job, connection=services.queue.connection).latest_result().exc_string
    captured = {
        "last_error": row.last_error,
        "api": api.get_data(as_text=True),  # the event view carries no payload, only the summary
        "rq": rq_text,
        "logs": caplog.text + "\n".join(r.getMessage() for r in caplog.records),
        "stderr": "".join(capfd.readouterr()),
        "sentry": sentry_sink.text(),
    }
    assert sentry_sink.envelopes, "RQ's Sentry integration reports the job once its retries are spent"
    assert "IntegrityError" in captured["sentry"]
    for where, text in captured.items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} found in {where}"


def test_a_statement_error_never_quotes_its_parameters(services):
    """The engine hides bound values from every error it raises, whoever prints it afterwards."""
    secret = "erin.secret@example.com"
    with pytest.raises(sa.exc.DBAPIError) as raised, services.db.engine.connect() as conn:
        conn.execute(sa.text("SELECT * FROM no_such_table WHERE email = :email"), {"email": secret})
    assert secret not in str(raised.value) and "hidden due to hide_parameters" in str(raised.value)

"""Replay through the drains, the operator CLI's options and output, tracebacks and retention."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import click
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from rq.registry import FailedJobRegistry

import handlers
from tests.conftest import SECRET
from tests.helpers import event_rows, invoke_cli, mirror_state, run_worker
from webhook_service.cli import cli
from webhook_service.cli_support import error_first_line, parse_when
from webhook_service.core.models import InvoiceStatusChange, StripeEvent
from webhook_service.processing import attempts, audit, retention
from webhook_service.processing import replay as replaying
from webhook_service.processing.event_filter import EventFilter


@pytest.fixture
def config_overrides():
    return {"retry_intervals": ()}


@pytest.fixture
def env(database_url, redis_url, monkeypatch):
    for key in ("SENTRY_DSN", "PORTAL_API_KEYS", "STRIPE_ACCEPT_MODE", "WEBHOOK_SERVICE_ACTOR"):
        monkeypatch.delenv(key, raising=False)
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "STRIPE_WEBHOOK_SECRETS": SECRET,
        "LOG_LEVEL": "WARNING",
        "EVENT_RETRY_INTERVALS": "",
    }


@pytest.fixture
def operator(env):
    def run(*args, extra_env=None):
        return CliRunner().invoke(cli, list(args), env={**env, **(extra_env or {})}, catch_exceptions=False)

    return run


@pytest.fixture
def broken(monkeypatch):
    """Make the handlers of some types raise, as a bad deploy would."""

    def breaks(*types):
        for event_type in types:
            real = handlers.EVENT_HANDLERS[event_type]

            def handler(event, session, real=real, event_type=event_type):
                if event_type in broken.types:
                    raise RuntimeError(f"handler bug in {event_type}")
                real(event, session)

            broken.types.add(event_type)
            monkeypatch.setitem(handlers.EVENT_HANDLERS, event_type, handler)

    broken = breaks
    broken.types = set()
    return broken


def _deliver(stripe, events):
    for event in events:
        assert stripe.post(event).status_code == 200


def _failing_run(app, stripe, fixture_events, broken):
    broken("invoice.paid", "invoice.finalized")
    _deliver(stripe, fixture_events)
    run_worker(app)
    rows = event_rows(app)
    failed = sorted(i for i, row in rows.items() if row.status == "failed")
    assert failed
    return failed


# ---- events list / show ------------------------------------------------------------------


def test_events_list_and_show(database_url, redis_url, app, stripe, fixture_events):
    for event in fixture_events[:3]:
        stripe.post(event)
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url}
    listed = invoke_cli("events", "list", "--status", "queued", env=env)
    assert listed.exit_code == 0, listed.stderr
    assert all(e["id"] in listed.stdout for e in fixture_events[:3])
    assert invoke_cli("events", "list", "--status", "failed", env=env).stdout.strip() == "No events match."
    shown = invoke_cli("events", "show", fixture_events[0]["id"], env=env)
    assert shown.exit_code == 0
    header, payload = shown.stdout.split("payload:\n")
    assert json.loads(header)["status"] == "queued" and json.loads(payload) == fixture_events[0]
    missing = invoke_cli("events", "show", "evt_nope", env=env)
    assert missing.exit_code == 2 and "not in the event log" in missing.stderr
    bad_date = invoke_cli("events", "list", "--since", "yesterday", env=env)
    assert bad_date.exit_code == 2 and "expected a date" in bad_date.stderr


# ---- replay -----------------------------------------------------------------------------------


def test_replay_goes_through_the_drain_not_a_job_per_event(
    app, stripe, services, fixture_events, broken, operator
):
    failed = _failing_run(app, stripe, fixture_events, broken)
    broken.types.clear()
    attempts_before = {i: event_rows(app)[i].attempts for i in failed}
    result = operator("replay", "--failed")
    assert result.exit_code == 0, result.output
    assert f"Re-enqueued {len(failed)} events." in result.output
    queue = services.queue.queue
    assert all(job_id.startswith("drain-") for job_id in queue.get_job_ids())  # no job per event
    assert queue.count <= 1
    assert FailedJobRegistry(queue=queue).get_job_ids() == []
    assert {event_rows(app)[i].status for i in failed} == {"queued"}
    run_worker(app)
    rows = event_rows(app)
    assert {rows[i].status for i in failed} == {"processed"}
    assert all(rows[i].attempts == attempts_before[i] + 1 for i in failed)  # attempts are never reset
    entry = audit.list_actions(services.db, action="replay")[0][0]
    assert entry.parameters["filter"] == {"status": ["failed"]} and entry.result["queued"] == len(failed)


def test_replay_without_redis_drains_in_the_cli_with_progress(
    app, stripe, fixture_events, broken, operator, env
):
    failed = _failing_run(app, stripe, fixture_events, broken)
    broken.types.clear()
    result = operator("replay", "--failed", extra_env={"REDIS_URL": ""})
    assert result.exit_code == 0, result.output
    assert "draining them in this process" in result.output
    assert f"replaying: {len(failed)}/{len(failed)}" in result.output  # plain progress lines off a terminal
    assert f"Replay finished: {len(failed)} processed." in result.output
    assert {event_rows(app)[i].status for i in failed} == {"processed"}


def test_replay_by_filter_repeatable_types_relative_times_and_json(
    app, stripe, fixture_events, broken, operator
):
    failed = _failing_run(app, stripe, fixture_events, broken)
    rows = event_rows(app)
    paid = [i for i in failed if rows[i].type == "invoice.paid"]
    finalized = [i for i in failed if rows[i].type == "invoice.finalized"]
    dry = operator(
        "replay", "--status", "failed", "--type", "invoice.paid", "--since", "1h", "--dry-run", "--json"
    )
    assert dry.exit_code == 0, dry.output
    body = json.loads(dry.output)
    assert sorted(body["events"]) == sorted(paid) and body["by_type"] == {"invoice.paid": len(paid)}
    both = operator(
        "replay", "--status", "failed", "--type", "invoice.paid", "--type", "invoice.finalized", "--dry-run"
    )
    assert f"Dry run: {len(paid) + len(finalized)} events would be re-enqueued" in both.output
    assert f"{len(paid)} invoice.paid" in both.output and "handler bug" in both.output
    assert "Dry run: 0 events" in operator("replay", "--failed", "--until", "1h", "--dry-run").output
    typo = operator("replay", "--failed", "--type", "invoice.payed", "--dry-run")
    assert "warning: invoice.payed is not an event type the service handles; did you mean invoice.paid?" in (
        typo.output
    )
    assert operator("replay", "--status", "processed").exit_code == 2  # needs --force
    assert operator("replay", "--since", "1h").exit_code == 2  # a filter alone
    assert operator("replay", "--failed", "--since", "2h", "--until", "3h").exit_code == 2
    assert {event_rows(app)[i].status for i in failed} == {"failed"}  # dry runs changed nothing


def test_replay_by_filter_from_the_library_counts_first(app, stripe, services, fixture_events, broken):
    failed = _failing_run(app, stripe, fixture_events, broken)
    broken.types.clear()
    flt = EventFilter(statuses=("failed",), types=("invoice.paid",))
    count = replaying.count_replayable(services.db, flt)
    result = replaying.replay_matching(services.db, services.queue, flt, actor="console:ops")
    assert result.count == count == sum(1 for i in failed if event_rows(app)[i].type == "invoice.paid")
    assert replaying.pending_of(services.db, result.queued) == {"queued": count}
    run_worker(app)
    assert replaying.pending_of(services.db, result.queued) == {"processed": count}


def test_forced_replay_of_processed_events_changes_nothing(app, stripe, fixture_events, operator):
    _deliver(stripe, fixture_events)
    run_worker(app)
    before = mirror_state(app)
    result = operator("replay", "--status", "processed", "--force")
    assert result.exit_code == 0 and "Re-enqueued" in result.output
    run_worker(app)
    assert mirror_state(app) == before


# ---- events list / show -------------------------------------------------------------------------


def test_events_list_totals_json_limit_and_filters(app, stripe, fixture_events, broken, operator):
    _failing_run(app, stripe, fixture_events, broken)
    total = len(fixture_events)
    listed = operator("events", "list", "--limit", "3")
    assert listed.exit_code == 0
    assert f"Showing 3 of {total} (" in listed.output and "use --limit to see more" in listed.output
    everything = operator("events", "list", "--limit", "1000")
    assert f"{total} events (" in everything.output
    as_json = json.loads(operator("events", "list", "--json", "--status", "failed").output)
    assert as_json and {row["status"] for row in as_json} == {"failed"}
    assert all(row["error"].startswith("RuntimeError: handler bug") for row in as_json)
    both = json.loads(
        operator(
            "events",
            "list",
            "--json",
            "--type",
            "invoice.paid",
            "--type",
            "invoice.voided",
            "--limit",
            "1000",
        ).output
    )
    assert {row["type"] for row in both} == {"invoice.paid", "invoice.voided"}
    assert operator("events", "list", "--since", "1h", "--until", "30m").output.strip() == "No events match."
    assert "did you mean invoice.paid" in operator("events", "list", "--type", "invoice.payd").output


def test_error_lists_show_the_first_line_without_sqlalchemy_tails(
    app, stripe, services, fixture_events, operator
):
    _deliver(stripe, fixture_events[:1])
    stored = (
        "IntegrityError: (psycopg.errors.UniqueViolation) duplicate key value violates unique constraint\n"
        "DETAIL: Key (id)=(in_1) already exists.\n[SQL: INSERT INTO invoices ...]\n"
        "[parameters: {'email': 'jane@example.com'}]\n"
        "(Background on this error at: https://sqlalche.me/e/20/gkpj)"
    )
    with services.db.engine.begin() as conn:
        conn.execute(sa.update(StripeEvent).values(status="failed", last_error=stored))
    out = operator("events", "list").output
    assert "duplicate key value violates unique constraint" in out
    assert "Background on this error" not in out and "jane@example.com" not in out and "[SQL" not in out
    assert error_first_line("OperationalError: boom [SQL: SELECT 1]") == "OperationalError: boom"


def test_events_show_traceback_has_frames_and_types_but_no_values(
    app, stripe, services, fixture_events, operator
):
    secret_value = "jane@example.com"

    def failing(event, session):
        local_secret = secret_value  # noqa: F841 - a local the traceback must not show
        raise ValueError(f"bad customer {secret_value}")

    try:
        failing(None, None)
    except ValueError as exc:
        text = attempts.traceback_of(exc)
    assert "in failing" in text and "builtins.ValueError" in text and "raise ValueError" in text
    assert secret_value not in text.replace("secret_value", "")

    handlers.EVENT_HANDLERS["invoice.created"], real = failing, handlers.EVENT_HANDLERS["invoice.created"]
    try:
        _deliver(stripe, fixture_events)
        run_worker(app)
    finally:
        handlers.EVENT_HANDLERS["invoice.created"] = real
    failed = next(i for i, row in event_rows(app).items() if row.type == "invoice.created")
    shown = operator("events", "show", failed, "--traceback", "--no-payload")
    assert shown.exit_code == 0
    assert (
        "traceback:" in shown.output
        and "builtins.ValueError" in shown.output
        and "payload:" not in shown.output
    )
    assert "in failing" in shown.output
    assert "jane@example.com" not in shown.output.split("traceback:")[1]


def test_final_failures_are_logged_at_error_level(app, stripe, fixture_events, broken, caplog):
    caplog.set_level(logging.INFO, logger="webhook_service")
    _failing_run(app, stripe, fixture_events, broken)
    outcomes = [r for r in caplog.records if r.getMessage() in ("event failed", "event processed")]
    assert {r.levelno for r in outcomes if r.getMessage() == "event failed"} == {logging.ERROR}
    assert {r.levelno for r in outcomes if r.getMessage() == "event processed"} == {logging.INFO}


# ---- the CLI as a whole ---------------------------------------------------------------------------


def test_version_and_help_on_every_option():
    runner = CliRunner()
    version = runner.invoke(cli, ["--version"])
    assert version.exit_code == 0 and version.output.startswith("webhook-service, version ")
    missing = []

    def walk(command, path):
        for param in command.params:
            if isinstance(param, click.Option) and not param.help and param.name not in ("version",):
                missing.append(f"{path} {param.opts[0]}")
        if not command.help:
            missing.append(f"{path} (command)")
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(cli, "webhook-service")
    assert missing == []


def test_relative_and_iso_times():
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert parse_when("2h", now) == now - timedelta(hours=2)
    assert parse_when("3d", now) == now - timedelta(days=3)
    assert parse_when("90m", now) == now - timedelta(minutes=90)
    assert parse_when("1w", now) == now - timedelta(weeks=1)
    assert parse_when("2026-11-01") == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_when("2026-11-01T12:00+01:00") == datetime(2026, 11, 1, 11, 0, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_when("last week")


# ---- retention ------------------------------------------------------------------------------------


def _age(services, days, where=None):
    old = datetime.now(UTC) - timedelta(days=days)
    with services.db.engine.begin() as conn:
        stmt = sa.update(StripeEvent).values(received_at=old)
        conn.execute(stmt.where(where) if where is not None else stmt)


def test_prune_keeps_pending_failed_and_referenced_events(
    app, stripe, services, fixture_events, broken, operator
):
    failed = _failing_run(app, stripe, fixture_events, broken)
    before = mirror_state(app)
    _age(services, 120)
    rows = event_rows(app)
    with services.db.sessions() as session:
        referenced = set(session.scalars(sa.select(InvoiceStatusChange.event_id))) - {None}
    assert referenced
    dry = operator("events", "prune", "--dry-run")
    assert dry.exit_code == 0 and "Dry run:" in dry.output
    assert event_rows(app).keys() == rows.keys()
    assert operator("events", "prune", "--older-than", "7").exit_code == 2  # below the 30-day floor
    pruned = operator("events", "prune", "--older-than", "90")
    assert pruned.exit_code == 0, pruned.output
    after = event_rows(app)
    assert set(failed) <= after.keys() and {after[i].status for i in failed} == {"failed"}
    assert referenced <= after.keys()
    assert all(
        after[i].payload == "" and after[i].payload_pruned_at
        for i in referenced
        if after[i].status != "failed"
    )
    gone = rows.keys() - after.keys()
    assert gone and all(rows[i].status in ("processed", "ignored") for i in gone)
    assert mirror_state(app) == before  # the mirror is untouched
    # Events whose payload went cannot be replayed; the rest of the log still can.
    kept = next(i for i in referenced if after[i].payload_pruned_at)
    refused = operator("replay", "--force", kept)
    assert "removed by retention" in refused.output
    shown = operator("events", "show", kept)
    assert "(removed by retention on" in shown.output
    again = operator("events", "prune")
    assert "Removed 0 events" in again.output
    actions = [r.action for r in audit.list_actions(services.db)[0]]
    assert actions.count("prune") == 3  # the dry run, the prune and the second prune


def test_prune_leaves_young_events_and_works_in_batches(app, stripe, services, fixture_events):
    _deliver(stripe, fixture_events)
    from tests.helpers import run_worker as work

    work(app)
    ids = sorted(event_rows(app))
    _age(services, 100, StripeEvent.id.in_(ids[: len(ids) // 2]))
    report = retention.prune_events(services.db, older_than_days=90, actor="t", batch_size=2)
    assert report.batches >= 2
    remaining = event_rows(app)
    assert set(ids[len(ids) // 2 :]) <= remaining.keys()  # young ones all stay
    assert report.deleted == len(ids) - len(remaining)


def test_the_scheduler_job_prunes_by_event_retention_days(app, stripe, services, fixture_events):
    from jobs import retention as retention_job

    _deliver(stripe, fixture_events)
    run_worker(app)
    _age(services, 400)
    with app.app_context():
        result = retention_job.prune_events()
    assert result["deleted"] > 0
    assert audit.list_actions(services.db, action="prune")[0][0].actor == "scheduler"


# ---- a local stack: send, gunicorn's bind ------------------------------------------------------------


@pytest.fixture
def running_receiver(app):
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/webhooks/stripe"
    server.shutdown()
    thread.join(5)


def test_send_signs_and_posts_fixtures_and_generated_events(app, running_receiver, monkeypatch):
    from tests.conftest import FIXTURES

    monkeypatch.setenv("STRIPE_WEBHOOK_SECRETS", SECRET)
    fixture = sorted(FIXTURES.rglob("*invoice.created*.json"))[0]
    runner = CliRunner()
    first = runner.invoke(cli, ["send", "--url", running_receiver, str(fixture), str(fixture)])
    assert first.exit_code == 0, first.output
    assert '"duplicate":false' in first.output and '"duplicate":true' in first.output
    generated = runner.invoke(cli, ["send", "--url", running_receiver, "--type", "invoice.paid"])
    assert generated.exit_code == 0 and "Sent 1 events; 1 accepted." in generated.output
    new_id = generated.output.split()[1]
    assert new_id.startswith("evt_") and new_id in event_rows(app)
    assert event_rows(app)[new_id].type == "invoice.paid"
    wrong = runner.invoke(
        cli, ["send", "--url", running_receiver, "--secret", "whsec_wrong_secret_000000", str(fixture)]
    )
    assert wrong.exit_code == 1 and wrong.output.startswith("400")
    unknown = runner.invoke(cli, ["send", "--url", running_receiver, "--type", "invoice.payed"])
    assert unknown.exit_code == 2 and "known types" in unknown.output
    down = runner.invoke(cli, ["send", "--url", "http://127.0.0.1:9/webhooks/stripe", str(fixture)])
    assert down.exit_code == 1 and "is the receiver running" in down.output


@pytest.mark.parametrize(
    "environ, expected",
    [
        ({}, "127.0.0.1:8000"),
        ({"PORT": "5000"}, "0.0.0.0:5000"),
        ({"PORT": "5000", "BIND": "127.0.0.1:9000"}, "127.0.0.1:9000"),
        ({"BIND": "unix:/run/web.sock"}, "unix:/run/web.sock"),
    ],
)
def test_gunicorn_bind_is_configurable_and_local_by_default(environ, expected, monkeypatch):
    import runpy
    from pathlib import Path

    for key in ("PORT", "BIND"):
        monkeypatch.delenv(key, raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    settings = runpy.run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py"))
    assert settings["bind"] == expected


def test_env_example_names_what_the_stack_needs():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    names = {
        line.split("=", 1)[0]
        for line in (root / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert {"DATABASE_URL", "REDIS_URL", "STRIPE_WEBHOOK_SECRETS", "BIND"} <= names
    procfile = {line.split(":", 1)[0] for line in (root / "Procfile").read_text().splitlines() if line}
    assert {"web", "worker", "scheduler"} <= procfile
    assert "honcho start web worker scheduler" in (root / "Makefile").read_text()

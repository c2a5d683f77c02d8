"""Pause/resume and the audit trail, on real Redis and each database, as an operator uses them."""

from __future__ import annotations

import json
import threading
import time

import pytest
from click.testing import CliRunner

import handlers
from tests.conftest import SECRET
from tests.helpers import event_rows, run_worker
from webhook_service.cli import cli
from webhook_service.processing import audit, drain, pause

KEY = "portal-key-for-audit"


@pytest.fixture
def config_overrides():
    return {"retry_intervals": (), "portal_api_keys": (KEY,)}


@pytest.fixture
def operator(database_url, redis_url, monkeypatch):
    """Runs `webhook-service …` in-process against the test's database and Redis."""
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "STRIPE_WEBHOOK_SECRETS": SECRET,
           "LOG_LEVEL": "WARNING", "EVENT_RETRY_INTERVALS": "", "WEBHOOK_SERVICE_ACTOR": ""}  # fmt: skip
    for key in ("SENTRY_DSN", "PORTAL_API_KEYS", "STRIPE_ACCEPT_MODE", "WEBHOOK_SERVICE_ACTOR"):
        monkeypatch.delenv(key, raising=False)

    def run(*args):
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    return run


def _statuses(app, events):
    rows = event_rows(app)
    return {rows[e["id"]].status for e in events if e["id"] in rows}


def _handled(events):
    return [e for e in events if e["type"] in handlers.HANDLED_TYPES and e["data"]["object"].get("id")]


def test_pause_keeps_recording_stops_drains_and_resume_drains_the_backlog(
    app, client, stripe, services, fixture_events, operator
):
    paused = operator("--actor", "alice", "pause", "--reason", "db maintenance")
    assert paused.exit_code == 0 and "Processing paused" in paused.output, paused.output
    for event in fixture_events:
        response = stripe.post(event)
        assert response.status_code == 200 and response.get_json()["duplicate"] is False
    run_worker(app)  # the drain job runs and stops before its first batch
    assert _statuses(app, _handled(fixture_events)) == {"queued"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["processing"]["paused"] is True
    assert ready.get_json()["processing"]["by"] == "alice"
    assert ready.get_json()["processing"]["reason"] == "db maintenance"
    # Redis losing everything does not unpause: the switch is in the database.
    services.queue.connection.flushdb()
    assert pause.get_state(services.db).paused

    resumed = operator("--actor", "alice", "resume")
    assert resumed.exit_code == 0 and "Processing resumed" in resumed.output
    run_worker(app)
    assert _statuses(app, _handled(fixture_events)) == {"processed"}
    assert client.get("/readyz").get_json()["processing"]["paused"] is False

    rows, total = audit.list_actions(services.db)
    assert total == 2 and [(r.action, r.actor) for r in rows] == [("resume", "alice"), ("pause", "alice")]
    assert rows[1].parameters == {"reason": "db maintenance"}


def test_pause_is_idempotent_and_keeps_the_first_time(services):
    first = pause.pause(services.db, actor="a")
    time.sleep(0.01)
    second = pause.pause(services.db, actor="b")
    assert second.since == first.since and second.by == "a"
    assert not pause.resume(services.db, services.queue, actor="a").paused


def test_a_drain_stops_at_the_batch_boundary_after_pause(app, stripe, services, fixture_events, monkeypatch):
    """Checked before claiming each batch: a pause between batches lets no further batch through."""
    for event in fixture_events:
        stripe.post(event)
    real = pause.batch_may_start
    calls = []

    def gate(session):
        calls.append(1)
        if len(calls) == 2:  # the first batch has committed; the operator pauses now
            pause.pause(services.db, actor="test")
        return real(session)

    monkeypatch.setattr(pause, "batch_may_start", gate)
    result = drain.drain(services.db, services.queue, batch_size=2)
    assert result.batches == 1 and result.processed == 2 and result.paused
    assert sum(1 for row in event_rows(app).values() if row.status == "processed") == 2


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_pause_returns_only_after_the_batch_in_flight_committed(
    app, stripe, services, fixture_events, monkeypatch
):
    for event in fixture_events:
        stripe.post(event)
    in_batch, release = threading.Event(), threading.Event()
    real_handle = handlers.handle

    def slow_handle(event, session):
        in_batch.set()
        release.wait(10)
        real_handle(event, session)

    monkeypatch.setattr(handlers, "handle", slow_handle)
    result = {}
    drainer = threading.Thread(
        target=lambda: result.update(r=drain.drain(services.db, services.queue, batch_size=3))
    )
    drainer.start()
    assert in_batch.wait(10)
    paused_at = {}
    pauser = threading.Thread(target=lambda: paused_at.update(t=pause.pause(services.db, actor="t")))
    pauser.start()
    time.sleep(0.5)
    assert pauser.is_alive(), "pause must wait for the batch in flight"
    release.set()
    pauser.join(10)
    drainer.join(10)
    assert not pauser.is_alive() and not drainer.is_alive()
    assert result["r"].batches == 1 and result["r"].paused
    assert sum(1 for row in event_rows(app).values() if row.status == "processed") == 3


def test_retries_due_while_paused_run_after_resume(app, services, stripe, fixture_events, monkeypatch):
    stripe.post(fixture_events[2])
    pause.pause(services.db, actor="t")
    event_id = fixture_events[2]["id"]
    services.queue.enqueue_event(event_id, retries_left=0)  # a retry coming due while paused
    run_worker(app)
    assert event_rows(app)[event_id].status == "queued"
    pause.resume(services.db, services.queue, actor="t")
    run_worker(app)
    assert event_rows(app)[event_id].status == "processed"


def test_audit_cli_and_read_api(app, client, services, operator):
    assert operator("--actor", "bob", "pause").exit_code == 0
    assert operator("--actor", "bob", "resume").exit_code == 0
    listed = operator("audit")
    assert listed.exit_code == 0
    lines = listed.output.splitlines()
    assert lines[0].split()[:3] == ["AT", "ACTOR", "ACTION"] and "resume" in lines[1] and "pause" in lines[2]
    assert "2 in all." in listed.output
    limited = operator("audit", "--limit", "1")
    assert "Showing 1 of 2; use --limit to see more." in limited.output
    as_json = operator("audit", "--json", "--action", "pause")
    parsed = json.loads(as_json.output)
    assert [(r["action"], r["actor"]) for r in parsed] == [("pause", "bob")]
    assert "2 in all." in operator("audit", "--since", "1h").output
    assert "No operator actions match." in operator("audit", "--until", "2h").output

    headers = {"Authorization": f"Bearer {KEY}"}
    body = client.get("/api/v1/audit", headers=headers).get_json()
    assert body["total"] == 2 and [i["action"] for i in body["items"]] == ["resume", "pause"]
    assert body["items"][0]["actor"] == "bob" and body["items"][0]["at"].endswith("+00:00")
    assert client.get("/api/v1/audit?action=pause", headers=headers).get_json()["total"] == 1
    assert client.get("/api/v1/audit").status_code == 401
    spec = client.get("/api/v1/openapi.json", headers=headers).get_json()
    assert "/api/v1/audit" in spec["paths"]


def test_the_default_actor_is_the_os_user(services, operator, monkeypatch):
    monkeypatch.setenv("USER", "carol")
    monkeypatch.setenv("LOGNAME", "carol")
    assert operator("pause").exit_code == 0
    rows, _ = audit.list_actions(services.db)
    assert rows[0].actor == "cli:carol"

"""Operators: replay, resync, Sentry, readiness details and metrics, on real Redis and each database."""

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
import responses
import sentry_sdk
from click.testing import CliRunner
from rq.job import Job
from rq.registry import FailedJobRegistry

import handlers
from tests.conftest import SECRET
from tests.helpers import disable_sentry, event_rows, invoices_by_number, mirror_state, run_worker
from webhook_service.cli import cli
from webhook_service.processing import eventlog
from webhook_service.processing.resync import MAX_ATTEMPTS, StripeAPIError, StripeEventsClient, resync
from webhook_service.web.observability import init_sentry

pytestmark = pytest.mark.pgbouncer

API = "https://api.stripe.test"


@pytest.fixture
def config_overrides():
    # No backoff: a failing event goes straight to `failed`, so tests need not wait for retries.
    # No API key for the app's workers (they would fetch from Stripe); resync gets one from `operator`.
    return {"retry_intervals": ()}


@pytest.fixture
def operator(database_url, redis_url, monkeypatch):
    """Runs `webhook-service …` in-process against the test's database and Redis."""
    env = {
        "DATABASE_URL": database_url, "REDIS_URL": redis_url, "STRIPE_WEBHOOK_SECRETS": SECRET,
        "STRIPE_API_KEY": "sk_test_operator", "STRIPE_API_BASE": API, "LOG_LEVEL": "WARNING",
        "EVENT_RETRY_INTERVALS": "",
    }  # fmt: skip
    for key in ("SENTRY_DSN", "PORTAL_API_KEYS", "STRIPE_ACCEPT_MODE"):
        monkeypatch.delenv(key, raising=False)

    def run(*args):
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    return run


@pytest.fixture
def broken_handler(monkeypatch):
    """Fault injection: make one event type's handler raise until `fix()` is called."""

    class Breaker:
        def __init__(self):
            self.broken = set()

        def breaks(self, event_type):
            real = handlers.EVENT_HANDLERS[event_type]
            self.broken.add(event_type)

            def handler(event, session):
                if event_type in self.broken:
                    raise RuntimeError(f"handler bug in {event_type}")
                real(event, session)

            monkeypatch.setitem(handlers.EVENT_HANDLERS, event_type, handler)

        def fix(self):
            self.broken.clear()

    return Breaker()


def handled_events(events):
    """The fixture events the service processes (the rest are acknowledged and ignored)."""
    return [e for e in events if e["type"] in handlers.HANDLED_TYPES and e["data"]["object"].get("id")]


def _deliver(stripe, events):
    for event in events:
        assert stripe.post(event).status_code == 200


# ---- replay -------------------------------------------------------------------------------


def test_replay_failed_from_the_registry_and_from_the_log(app, stripe, services, fixture_events, operator,
                                                          broken_handler):  # fmt: skip
    broken_handler.breaks("invoice.paid")
    _deliver(stripe, fixture_events)
    run_worker(app)
    paid_ids = {e["id"] for e in fixture_events if e["type"] == "invoice.paid"}
    rows = event_rows(app)
    assert {rows[i].status for i in paid_ids} == {"failed"}
    assert set(FailedJobRegistry(queue=services.queue.queue).get_job_ids()) == paid_ids
    # One of the two failed jobs has expired from the registry; the event log still has it.
    expired = sorted(paid_ids)[0]
    registry = FailedJobRegistry(queue=services.queue.queue)
    registry.remove(Job.fetch(expired, connection=services.queue.connection), delete_job=True)

    dry = operator("replay", "--failed", "--dry-run")
    assert dry.exit_code == 0 and "Dry run: 2 events would be re-enqueued" in dry.output
    assert {event_rows(app)[i].status for i in paid_ids} == {"failed"}

    broken_handler.fix()
    result = operator("replay", "--failed", "--type", "invoice.paid")
    assert result.exit_code == 0, result.output
    assert "Re-enqueued 2 events." in result.output and "handler bug" in result.output
    run_worker(app)
    rows = event_rows(app)
    assert {rows[i].status for i in paid_ids} == {"processed"}
    assert FailedJobRegistry(queue=services.queue.queue).get_job_ids() == []
    assert invoices_by_number(app)["ACME-0001"].status == "paid"


def test_replaying_processed_events_changes_nothing(app, stripe, fixture_events, operator):
    _deliver(stripe, fixture_events)
    run_worker(app)
    before = mirror_state(app)
    target = fixture_events[2]["id"]
    plain = operator("replay", target)
    assert plain.exit_code == 0 and "already processed" in plain.output and "Nothing to do." in plain.output
    forced = operator("replay", "--force", target, fixture_events[1]["id"])
    assert forced.exit_code == 0 and "Re-enqueued 2 events." in forced.output
    run_worker(app)
    assert mirror_state(app) == before
    assert event_rows(app)[target].attempts == 2


def test_replay_filters_and_bad_input(app, stripe, fixture_events, operator, broken_handler):
    broken_handler.breaks("invoice.created")
    _deliver(stripe, fixture_events)
    run_worker(app)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert "Nothing to do." in operator("replay", "--failed", "--since", tomorrow).output
    assert (
        "Dry run: 0 events" in operator("replay", "--failed", "--type", "invoice.voided", "--dry-run").output
    )
    created = sum(1 for e in fixture_events if e["type"] == "invoice.created")
    assert f"Dry run: {created} events" in operator("replay", "--failed", "--dry-run").output
    missing = operator("replay", "evt_does_not_exist")
    assert missing.exit_code == 1 and "not in the event log" in missing.output
    assert operator("replay").exit_code == 2
    assert operator("replay", "--type", "invoice.paid", "evt_1").exit_code == 2
    assert operator("replay", "--failed", "--since", "last week").exit_code == 2


# ---- resync -------------------------------------------------------------------------------


def _listed(fixture_events):
    """Stripe lists newest first."""
    return sorted(fixture_events, key=lambda e: (-e["created"], e["id"]))


class FakeEventsAPI:
    """GET /v1/events as Stripe answers it: filtered by types[], paginated by starting_after and limit."""

    def __init__(self, events, page_size=10, rate_limit_on_call=None):
        self.events = _listed(events)
        self.page_size = page_size
        self.rate_limit_on_call = rate_limit_on_call
        self.calls = 0

    def __call__(self, request):
        from urllib.parse import parse_qs, urlparse

        self.calls += 1
        if self.calls == self.rate_limit_on_call:
            body = {"error": {"type": "invalid_request_error", "code": "rate_limit",
                              "message": "Too many requests hit the API too quickly."}}  # fmt: skip
            return 429, {"Retry-After": "2"}, json.dumps(body)
        query = parse_qs(urlparse(request.url).query)
        types = set(query.get("types[]", []))
        since = int(query["created[gte]"][0])
        matching = [e for e in self.events if e["type"] in types and e["created"] >= since]
        if "starting_after" in query:
            ids = [e["id"] for e in matching]
            matching = matching[ids.index(query["starting_after"][0]) + 1 :]
        limit = min(int(query.get("limit", ["10"])[0]), self.page_size)
        page = {
            "object": "list",
            "url": "/v1/events",
            "has_more": len(matching) > limit,
            "data": matching[:limit],
        }
        return 200, {}, json.dumps(page)


def _handled_fixtures(fixture_events):
    return [e for e in fixture_events if e["type"] in handlers.HANDLED_TYPES]


@responses.activate
def test_resync_pages_through_events_and_records_only_missing_ones(app, stripe, services, fixture_events):
    api = FakeEventsAPI(fixture_events, page_size=10, rate_limit_on_call=2)
    responses.add_callback(responses.GET, f"{API}/v1/events", callback=api)
    listed = _listed(_handled_fixtures(fixture_events))
    _deliver(stripe, listed[:3])  # these arrived by webhook already
    waits = []
    client = StripeEventsClient("sk_test_operator", API, sleep=waits.append)
    since = datetime.fromtimestamp(min(e["created"] for e in fixture_events), UTC)
    types = sorted(handlers.HANDLED_TYPES)
    assert len(types) > 20  # so the listing is split into two type chunks
    report = resync(services.db, services.queue, client, since, types, now=since + timedelta(days=5))
    assert (report.listed, report.already_logged) == (len(listed), 3)
    assert report.recorded == {"queued": len(listed) - 3}
    assert waits == [2.0]  # the 429 on the second call, with Retry-After: 2
    paged = [c.request.url for c in responses.calls if "starting_after=" in c.request.url]
    assert paged and all(
        c.request.headers["Authorization"] == "Bearer sk_test_operator" for c in responses.calls
    )
    assert all(c.request.url.count("types%5B%5D=") <= 20 for c in responses.calls)
    run_worker(app)
    assert invoices_by_number(app)["ACME-0013"].status == "paid"
    assert json.loads(event_rows(app)[listed[5]["id"]].payload) == listed[5]


@responses.activate
def test_resync_respects_stripe_should_retry_false(services):
    responses.get(f"{API}/v1/events", status=500, headers={"Stripe-Should-Retry": "false"},
                  json={"error": {"message": "An unknown error occurred"}})  # fmt: skip
    client = StripeEventsClient("sk_test_operator", API, sleep=lambda s: None)
    with pytest.raises(StripeAPIError, match="after 1 attempt"):
        resync(services.db, services.queue, client, datetime.now(UTC) - timedelta(days=1), ["invoice.paid"])
    assert len(responses.calls) == 1


@responses.activate
def test_resync_gives_up_after_repeated_rate_limits(services):
    responses.get(f"{API}/v1/events", status=429, json={"error": {"message": "Too many requests"}})
    waits = []
    client = StripeEventsClient("sk_test_operator", API, sleep=waits.append)
    with pytest.raises(StripeAPIError, match="Too many requests"):
        list(client.iter_events(datetime.now(UTC), ["invoice.paid"]))
    # The one retry policy: exponential backoff with full jitter (each wait at most 0.5 s x 2^n).
    assert len(responses.calls) == MAX_ATTEMPTS and len(waits) == MAX_ATTEMPTS - 1
    assert all(0 <= wait <= 0.5 * 2**n for n, wait in enumerate(waits))


@responses.activate
def test_resync_cli_clamps_to_30_days_dry_run_and_errors(app, stripe, fixture_events, operator):
    recent = [dict(e, created=int(datetime.now(UTC).timestamp()) - 3600) for e in fixture_events]
    responses.add_callback(responses.GET, f"{API}/v1/events", callback=FakeEventsAPI(recent, page_size=100))
    listed = _handled_fixtures(recent)
    dry = operator("resync", "--since", "2020-01-01", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "Stripe keeps events for 30 days" in dry.output
    assert f"Stripe listed {len(listed)} events; 0 already" in dry.output and "nothing changed" in dry.output
    created_gte = int(re.search(r"created%5Bgte%5D=(\d+)", responses.calls[0].request.url).group(1))
    assert abs(created_gte - (datetime.now(UTC) - timedelta(days=30)).timestamp()) < 60
    assert event_rows(app) == {}
    real = operator("resync", "--since", "2020-01-01", "--type", "invoice.paid")
    assert real.exit_code == 0, real.output
    paid = sum(1 for e in listed if e["type"] == "invoice.paid")
    assert (
        f"Stripe listed {paid} events" in real.output
        and f"Recorded {paid} events ({paid} queued)." in real.output
    )
    responses.reset()
    responses.get(
        f"{API}/v1/events",
        status=401,
        json={"error": {"message": "Invalid API Key provided: sk_test_****ator"}},
    )
    denied = operator("resync", "--since", "2026-11-01")
    assert denied.exit_code == 2 and "Invalid API Key provided" in denied.output


# ---- Sentry -------------------------------------------------------------------------------


class CaptureTransport(sentry_sdk.transport.Transport):
    def __init__(self):
        super().__init__()
        self.envelopes = []

    def capture_envelope(self, envelope):
        self.envelopes.append(envelope)


@pytest.fixture
def sentry_events(services):
    transport = CaptureTransport()
    init_sentry(services.config.with_overrides(sentry_dsn="https://public@sentry.example.invalid/1"),
                transport=transport)  # fmt: skip
    yield transport
    disable_sentry()


def _sent(transport):
    sentry_sdk.flush()
    events = [env.get_event() for env in transport.envelopes if env.get_event() is not None]
    raw = b"".join(item.payload.get_bytes() for env in transport.envelopes for item in env.items)
    return events, raw.decode("utf-8", "replace")


def test_web_errors_reach_sentry_tagged_and_without_body_or_signature(stripe, sentry_events, fixture_events,
                                                                      monkeypatch):  # fmt: skip
    def explode(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(eventlog, "record_events", explode)
    marker = "-".join(["customer", "secret", "marker"])  # built at run time: Sentry sends source lines
    event = dict(fixture_events[0], marker=f"{marker}@example.com")
    body = json.dumps(event).encode()
    response = stripe.post(body)
    assert response.status_code == 500 and response.get_json()["error"] == "internal_error"
    events, raw = _sent(sentry_events)
    [captured] = events
    assert captured["tags"]["stripe.event_id"] == event["id"]
    assert captured["tags"]["stripe.event_type"] == event["type"]
    assert captured["exception"]["values"][-1]["value"] == "disk on fire"
    for secret_text in (marker, SECRET, "v1=", "sk_test_operator"):
        assert secret_text not in raw
    headers = {k.lower() for k in captured["request"].get("headers", {})}
    assert headers and "stripe-signature" not in headers and "data" not in captured["request"]


def test_job_errors_reach_sentry_tagged_without_payload(app, stripe, services, sentry_events, fixture_events):
    poison = json.loads(json.dumps(next(e for e in fixture_events if e["type"] == "invoice.created")))
    poison["id"] = "evt_1PoisonForSentry0000000"
    poison["data"]["object"]["amount_due"] = "lots"
    marker = "-".join(["poison", "marker"])  # built at run time: Sentry sends source lines
    poison["data"]["object"]["customer_email"] = f"{marker}@example.com"
    _deliver(stripe, [poison])
    run_worker(app)
    events, raw = _sent(sentry_events)
    job_events = [e for e in events if e.get("tags", {}).get("stripe.event_id") == poison["id"]]
    assert job_events, [e.get("tags") for e in events]
    assert job_events[-1]["tags"]["stripe.event_type"] == "invoice.created"
    assert marker not in raw and SECRET not in raw


# ---- readiness and metrics ----------------------------------------------------------------


def test_readyz_reports_queue_depth_and_failures(app, client, stripe, fixture_events, broken_handler):
    broken_handler.breaks("invoice.voided")
    _deliver(stripe, fixture_events)
    body = client.get("/readyz").get_json()
    handled = len(handled_events(fixture_events))
    assert body["queue"] == {"depth": 1, "failed_jobs": 0} and body["events"] == {
        "pending": handled,
        "failed": 0,
    }
    run_worker(app)
    body = client.get("/readyz").get_json()
    assert body["queue"] == {"depth": 0, "failed_jobs": 1} and body["events"] == {"pending": 0, "failed": 1}


def test_metrics_expose_counts_by_type_and_queue_latency(app, client, stripe, fixture_events, broken_handler):
    broken_handler.breaks("invoice.voided")
    _deliver(stripe, fixture_events)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'stripe_webhook_events_received_total{type="invoice.paid"} 2.0' in text
    assert "stripe_webhook_queue_depth 1.0" in text
    assert re.search(r"stripe_webhook_backlog_age_seconds \d", text)
    run_worker(app)
    response = client.get("/metrics")
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert 'stripe_webhook_events_processed_total{type="invoice.paid"} 2.0' in text
    assert 'stripe_webhook_events_failed_total{type="invoice.voided"} 1.0' in text
    assert 'stripe_webhook_events_ignored_total{type="invoice.upcoming"} 1.0' in text
    assert "stripe_webhook_failed_jobs 1.0" in text and "stripe_webhook_queue_depth 0.0" in text
    processed = len(handled_events(fixture_events)) - 1
    assert f"stripe_webhook_processing_latency_seconds_count {processed}.0" in text
    assert f'stripe_webhook_processing_latency_seconds_bucket{{le="60"}} {processed}.0' in text


# ---- logs ---------------------------------------------------------------------------------


def test_one_structured_log_line_per_event_outcome(app, stripe, fixture_events, broken_handler, caplog):
    import logging

    from webhook_service.core.logging_setup import JsonFormatter

    broken_handler.breaks("invoice.voided")
    caplog.set_level(logging.INFO, logger="webhook_service")
    _deliver(stripe, fixture_events)
    run_worker(app)
    lines = [
        json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name.startswith("webhook_service.")
    ]
    by_outcome = {}
    for line in lines:
        if "outcome" in line:
            by_outcome.setdefault(line["outcome"], []).append(line)
    handled = len(handled_events(fixture_events))
    assert len(by_outcome["queued"]) == handled and len(by_outcome["ignored"]) == 2
    assert len(by_outcome["processed"]) == handled - 1 and len(by_outcome["failed"]) >= 1
    for line in by_outcome["processed"] + by_outcome["failed"]:
        assert {"event_id", "type", "outcome", "duration_ms", "attempt"} <= set(line)
    failed = by_outcome["failed"][0]
    assert failed["type"] == "invoice.voided" and "handler bug" in failed["error"]
    everything = "\n".join(json.dumps(line) for line in lines)
    assert SECRET not in everything and "v1=" not in everything and "hosted_invoice_url" not in everything

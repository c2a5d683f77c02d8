"""POST /webhooks/stripe and the probes, against real Redis and each database."""

import json
import time

import pytest
import redis
import sqlalchemy as sa
from rq import Queue

from tests.conftest import OTHER_SECRET, SECRET, make_config
from webhook_service.core.models import StripeEvent
from webhook_service.core.signature import compute_signature
from webhook_service.web.app import create_app
from webhook_service.web.services import get_services

pytestmark = pytest.mark.pgbouncer


def _events(services) -> list[StripeEvent]:
    with services.db.sessions() as session:
        return list(session.scalars(sa.select(StripeEvent).order_by(StripeEvent.id)))


def _queued_job_ids(services) -> list[str]:
    return services.queue.queue.get_job_ids()


def _assert_nothing_kept(services):
    assert _events(services) == []
    assert _queued_job_ids(services) == []


def test_accepts_a_signed_event_and_records_it_durably(stripe, services, fixture_events):
    event = fixture_events[0]
    # WHEN Stripe delivers a signed event
    response = stripe.post(event)
    # THEN it is acknowledged with the contract's body
    assert response.status_code == 200
    assert response.get_json() == {"received": True, "id": event["id"], "duplicate": False}
    # AND the event log holds it with its envelope and the exact raw payload
    [row] = _events(services)
    assert (row.id, row.type, row.api_version, row.livemode, row.status, row.attempts) == (
        event["id"], event["type"], event["api_version"], False, "queued", 0,
    )  # fmt: skip
    assert row.object_id == event["data"]["object"]["id"]
    assert int(row.created.timestamp()) == event["created"]
    assert json.loads(row.payload) == event
    # AND a drain job is waiting on the queue
    assert len(_queued_job_ids(services)) == 1


def test_a_burst_of_deliveries_costs_one_drain_job(stripe, services, fixture_events):
    for event in fixture_events[:6]:
        assert stripe.post(event).status_code == 200
    assert len(_queued_job_ids(services)) == 1
    assert len(_events(services)) == 6


def test_repeated_delivery_is_acknowledged_as_duplicate_and_changes_nothing(stripe, services, fixture_events):
    event = fixture_events[0]
    stripe.post(event)
    before = [(r.id, r.status, r.received_at, r.payload) for r in _events(services)]
    response = stripe.post(event)
    assert response.status_code == 200
    assert response.get_json() == {"received": True, "id": event["id"], "duplicate": True}
    assert [(r.id, r.status, r.received_at, r.payload) for r in _events(services)] == before


@pytest.mark.parametrize("config_overrides", [{"webhook_secrets": (SECRET, OTHER_SECRET)}])
def test_secret_rolling_accepts_either_secret_and_multi_v1_headers(stripe, services, fixture_events):
    body = json.dumps(fixture_events[0]).encode()
    assert stripe.post(body, secret=OTHER_SECRET).status_code == 200
    now = int(time.time())
    unknown = compute_signature(body, now, "whsec_unknown_000000000")
    header = f"t={now},v1={unknown},v1={compute_signature(body, now, SECRET)}"
    assert stripe.post(body, header=header).get_json()["duplicate"] is True


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"secret": "whsec_wrong_0000000000000"}, "matches"),
        ({"timestamp": int(time.time()) - 3600}, "tolerance"),
        ({"timestamp": int(time.time()) + 3600}, "tolerance"),
        ({"header": ""}, "Missing Stripe-Signature"),
        ({"header": "t=1,v0=abc"}, "no v1"),
    ],
)
def test_bad_signatures_get_400_json_and_nothing_is_kept(stripe, services, fixture_events, kwargs, message):
    response = stripe.post(fixture_events[0], **kwargs)
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "invalid_signature" and message in body["message"]
    _assert_nothing_kept(services)


def _event_bytes(**fields) -> bytes:
    event = {"object": "event", "id": "evt_1", "type": "invoice.paid", "created": 1_790_000_000,
             "data": {"object": {"object": "invoice", "id": "in_1"}}, **fields}  # fmt: skip
    return json.dumps(event).encode()


@pytest.mark.parametrize(
    "body, message",
    [
        (b"not json at all", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        ('{"object": "event"}'.encode("utf-16"), "UTF-8 expected"),
        (b"[1, 2]", "not an object"),
        (b'{"object": "invoice", "id": "in_1"}', "not a Stripe event"),
        (b'{"object": "event", "type": "invoice.paid"}', "no usable id"),
        (b'{"object": "event", "id": "evt_1"}', "no type"),
        (b'{"object": "event", "id": "evt_1", "type": "invoice.paid", "data": {}}', "no data.object"),
        # Values the event log could not store must be a 400, not a failed INSERT (a 503 forever).
        (_event_bytes(type="invoice." + "x" * 100), "type longer than 100"),
        (_event_bytes(id="evt_\u0000nul"), "id contains a NUL"),
        (_event_bytes(api_version="2024-06-20\u0000"), "api_version contains a NUL"),
        (_event_bytes(created=10**15), "not a Unix timestamp"),
        (b'{"object": "event", "id": "evt_\\ud800", "type": "x"}', "not valid JSON"),
    ],
)
def test_signed_bodies_that_are_not_events_get_400(stripe, services, body, message):
    response = stripe.post(body)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_payload"
    assert message in response.get_json()["message"]
    _assert_nothing_kept(services)


def test_body_over_one_mebibyte_gets_413(stripe, services, fixture_events):
    event = dict(fixture_events[0], padding="x" * (1024 * 1024))
    response = stripe.post(event)
    assert response.status_code == 413
    assert response.get_json()["error"] == "request_entity_too_large"
    _assert_nothing_kept(services)


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_wrong_method_gets_405_json(client, method):
    response = getattr(client, method)("/webhooks/stripe")
    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


def _ignored(stripe, services, event):
    response = stripe.post(event)
    assert response.status_code == 200 and response.get_json()["duplicate"] is False
    [row] = _events(services)
    assert row.status == "ignored" and row.processed_at is not None
    assert _queued_job_ids(services) == []
    return row


def test_unhandled_event_types_are_acknowledged_and_recorded_as_ignored(stripe, services, fixture_events):
    event = next(e for e in fixture_events if e["type"] == "customer.subscription.updated")
    assert "not handled" in _ignored(stripe, services, event).ignored_reason


def test_invoice_upcoming_without_id_is_ignored_cleanly(stripe, services, fixture_events):
    event = next(e for e in fixture_events if e["type"] == "invoice.upcoming")
    assert "id" not in event["data"]["object"]
    assert _ignored(stripe, services, event).ignored_reason


def test_thin_events_are_acknowledged_and_ignored(stripe, services):
    thin = {
        "id": "evt_test_65R9Ijk3hbBkTH", "object": "v2.core.event", "type": "v1.invoice.paid",
        "created": "2026-11-01T00:00:00.000Z", "livemode": False,
        "related_object": {"id": "in_1Thin", "type": "invoice", "url": "/v1/invoices/in_1Thin"},
    }  # fmt: skip
    row = _ignored(stripe, services, thin)
    assert row.object_id == "in_1Thin" and "thin event" in row.ignored_reason


@pytest.mark.parametrize("config_overrides", [{"accept_mode": "live"}])
def test_events_of_the_other_mode_are_acknowledged_and_ignored(stripe, services, fixture_events):
    assert "STRIPE_ACCEPT_MODE=live" in _ignored(stripe, services, fixture_events[0]).ignored_reason


def test_database_down_answers_503_and_enqueues_nothing(database_url, redis_url, fixture_events):
    dead_db = "postgresql+psycopg://root@127.0.0.1:1/none?connect_timeout=1"
    app = create_app(make_config(dead_db, redis_url))
    queue = get_services(app).queue
    queue.queue.empty()
    from tests.conftest import StripeSender

    response = StripeSender(app.test_client()).post(fixture_events[0])
    assert response.status_code == 503
    assert (
        response.get_json()["error"] == "service_unavailable" and "Database" in response.get_json()["message"]
    )
    assert queue.queue.get_job_ids() == []
    ready = app.test_client().get("/readyz")
    assert ready.status_code == 503 and "database" in ready.get_json()["message"]


def test_redis_down_answers_503_and_the_event_is_still_kept(database_url, fixture_events):
    from tests.conftest import StripeSender, _clean

    _clean(database_url)
    app = create_app(make_config(database_url, "redis://127.0.0.1:1/0"))
    sender = StripeSender(app.test_client())
    response = sender.post(fixture_events[0])
    assert response.status_code == 503 and "Queue" in response.get_json()["message"]
    # Not acknowledged, yet not lost either: the log holds it for recovery and Stripe's retry.
    [row] = _events(get_services(app))
    assert row.status == "queued"
    ready = app.test_client().get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["redis"].startswith("unavailable")
    assert ready.get_json()["checks"]["database"] == "ok"
    get_services(app).db.engine.dispose()


def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.get_json()
    assert (body["status"], body["checks"]) == ("ready", {"database": "ok", "schema": "ok", "redis": "ok"})


def test_receiver_does_not_build_stripe_objects(stripe, fixture_events, monkeypatch):
    """PEERS.md: construct_event costs ~0.5 ms per event; the request path must not call it."""
    import stripe as stripe_sdk

    def forbidden(*args, **kwargs):
        raise AssertionError("StripeObject built in the request path")

    monkeypatch.setattr(stripe_sdk.Webhook, "construct_event", forbidden)
    monkeypatch.setattr(stripe_sdk.StripeObject, "construct_from", forbidden)
    assert stripe.post(fixture_events[0]).status_code == 200


def test_redis_queue_is_the_configured_one(services, redis_url):
    assert isinstance(services.queue.queue, Queue)
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    assert services.queue.connection.connection_pool.connection_kwargs["port"] == port
    assert not services.queue.embedded
    assert isinstance(services.queue.connection, redis.Redis)

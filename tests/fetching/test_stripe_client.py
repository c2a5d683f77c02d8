"""The one Stripe client over real HTTP (tests/fetching/fake_stripe.py): retry policy, paging, budget."""

import random
import threading
import time

import pytest
import redis

from tests.fetching.fake_stripe import FakeStripe
from webhook_service.core.config import Config
from webhook_service.core.errors import StripeNotFound, StripeUnavailable
from webhook_service.processing.stripe_budget import BudgetExhausted, RequestBudget
from webhook_service.processing.stripe_client import (
    BASE_BACKOFF_SECONDS,
    StripeClient,
    build_client,
    endpoint_of,
)

KEY = "sk_test_fake"


@pytest.fixture
def fake():
    with FakeStripe() as server:
        server.put("invoices", {"id": "in_1", "object": "invoice", "status": "open"})
        yield server


def client_for(fake, **kwargs) -> tuple[StripeClient, list[float]]:
    waits: list[float] = []
    kwargs.setdefault("sleep", waits.append)
    return StripeClient(KEY, fake.url, rng=random.Random(7), **kwargs), waits


def test_a_429_waits_at_least_retry_after_then_succeeds(fake):
    fake.fail("/v1/invoices/in_1", 429, times=1, retry_after="2")
    client, waits = client_for(fake)
    assert client.get("/v1/invoices/in_1")["status"] == "open"
    assert waits == [2.0] and len(fake.paths()) == 2


def test_5xx_backs_off_with_full_jitter_and_gives_up_as_unavailable(fake):
    fake.fail("/v1/invoices/in_1", 503, times=10)
    client, waits = client_for(fake)
    with pytest.raises(StripeUnavailable, match="after 3 attempt"):
        client.get("/v1/invoices/in_1")
    assert len(fake.paths()) == 3 and len(waits) == 2
    assert all(0 <= w <= BASE_BACKOFF_SECONDS * 2**n for n, w in enumerate(waits))


def test_a_long_retry_after_is_handed_to_the_event_retry_instead_of_sleeping(fake):
    fake.fail("/v1/invoices/in_1", 429, times=1, retry_after="120")
    client, waits = client_for(fake)
    with pytest.raises(StripeUnavailable) as raised:
        client.get("/v1/invoices/in_1")
    assert waits == [] and raised.value.retry_after == 120.0 and len(fake.paths()) == 1


def test_stripe_should_retry_false_is_final_and_404_is_not_found(fake):
    fake.fail("/v1/invoices/in_1", 500, times=1, should_retry="false")
    client, _ = client_for(fake)
    with pytest.raises(StripeUnavailable, match="after 1 attempt"):
        client.get("/v1/invoices/in_1")
    with pytest.raises(StripeNotFound):
        client.get("/v1/invoices/in_gone")
    assert client.retrieve("/v1/invoices/in_gone") is None


def test_a_wrong_key_is_not_retried_in_the_call(fake):
    client = StripeClient("sk_test_wrong", fake.url, sleep=lambda s: None)
    with pytest.raises(StripeUnavailable, match="HTTP 401: Invalid API Key"):
        client.get("/v1/invoices/in_1")
    assert len(fake.paths()) == 1


def test_list_all_pages_with_starting_after_and_sends_account_and_version(fake):
    lines = [{"id": f"il_{n:03d}", "object": "line_item", "amount": n} for n in range(250)]
    fake.put_invoice({"id": "in_2", "object": "invoice"}, lines)
    client, _ = client_for(fake)
    got = list(client.list_all("/v1/invoices/in_2/lines", account="acct_1X", api_version="2024-06-20"))
    assert [line["id"] for line in got] == [line["id"] for line in lines]
    sent = fake.state.requests
    assert [dict(r.params).get("starting_after") for r in sent] == [None, "il_099", "il_199"]
    assert all(r.headers["Stripe-Account"] == "acct_1X" and r.headers["Stripe-Version"] == "2024-06-20"
               for r in sent)  # fmt: skip


def test_endpoints_are_named_without_ids():
    assert endpoint_of("GET", "/v1/invoices/in_1Abc/lines") == "GET /v1/invoices/{id}/lines"
    assert endpoint_of("GET", "/v1/prices/price_1Q") == "GET /v1/prices/{id}"
    assert endpoint_of("GET", "/v1/events") == "GET /v1/events"


class FakeClock:
    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_the_budget_is_one_schedule_for_every_worker_sharing_redis(redis_url):
    connection = redis.Redis.from_url(redis_url)
    connection.flushdb()
    clock = FakeClock()
    workers = [
        RequestBudget(10, 10, redis.Redis.from_url(redis_url), prefix="t", clock=clock, sleep=clock.sleep)
        for _ in range(3)
    ]
    granted = []
    for n in range(40):
        workers[n % 3].acquire("GET /v1/invoices/{id}")
        granted.append(clock.now)
    start = granted[0]
    assert granted[-1] - start == pytest.approx(3.9, abs=0.01)  # 10/s, evenly paced
    for t in granted:  # no one-second window holds more than the rate
        assert sum(1 for g in granted if t <= g < t + 1) <= 10
    connection.flushdb()


def test_the_endpoint_limit_holds_while_the_account_has_room(redis_url):
    clock = FakeClock()
    budget = RequestBudget(
        100, 25, redis.Redis.from_url(redis_url), prefix="e", clock=clock, sleep=clock.sleep
    )
    for _ in range(50):
        budget.acquire("GET /v1/invoices/{id}")
    assert clock.now - 1_800_000_000.0 == pytest.approx(49 / 25, abs=0.01)
    before = clock.now
    budget.acquire("GET /v1/prices/{id}")  # another endpoint: only the account schedule applies
    assert clock.now - before <= 0.011
    with pytest.raises(BudgetExhausted):
        for _ in range(100):
            budget.acquire("GET /v1/invoices/{id}", max_wait=0.01)
    redis.Redis.from_url(redis_url).flushdb()


def test_workers_sharing_the_budget_never_trip_the_rate_limit(fake, redis_url):
    """Four threads, as four workers would, against a server that 429s above 20 requests per second."""
    redis.Redis.from_url(redis_url).flushdb()
    fake.state.limit_per_second = 20
    config = Config(
        stripe_api_key=KEY, stripe_api_base=fake.url, stripe_api_rate=18, stripe_api_endpoint_rate=18
    )
    clients = [build_client(config, redis.Redis.from_url(redis_url), max_attempts=1) for _ in range(4)]
    errors = []

    def work(client):
        try:
            for _ in range(10):
                client.get("/v1/invoices/in_1")
        except Exception as exc:  # noqa: BLE001 - the assertion reports it
            errors.append(exc)

    started = time.monotonic()
    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == [] and fake.state.rate_limited == 0 and len(fake.paths()) == 40
    assert time.monotonic() - started >= 39 / 18 - 0.1
    redis.Redis.from_url(redis_url).flushdb()


def test_without_the_budget_the_same_load_is_rate_limited(fake):
    fake.state.limit_per_second = 20
    client = StripeClient(KEY, fake.url, max_attempts=1)
    failures = 0
    for _ in range(40):
        try:
            client.get("/v1/invoices/in_1")
        except StripeUnavailable:
            failures += 1
    assert failures > 0 and fake.state.rate_limited == failures


def test_a_200_whose_body_is_not_json_is_transient_unavailability_not_a_decode_error(fake):
    # GIVEN a proxy in front of Stripe that answers 200 with an HTML page, twice, then Stripe itself
    fake.put("customers", {"id": "cus_1", "object": "customer", "created": 1})
    fake.fail("/v1/customers/cus_1", 200, times=2, raw=b"<html>gateway</html>")
    client, waits = client_for(fake, max_attempts=2)
    # WHEN the client gets the object with two attempts THEN it gives up as StripeUnavailable
    with pytest.raises(StripeUnavailable, match="not a JSON object") as refused:
        client.get("/v1/customers/cus_1")
    assert refused.value.http_status == 200 and len(waits) == 1
    # AND with a third attempt it reads the real answer
    assert client.get("/v1/customers/cus_1")["id"] == "cus_1"


def test_an_unknown_starting_after_is_a_400_resource_missing_with_its_param(fake):
    fake.put("customers", {"id": "cus_1", "object": "customer", "created": 1})
    client, _ = client_for(fake)
    with pytest.raises(StripeUnavailable) as refused:
        client.get("/v1/customers", [("starting_after", "cus_gone")])
    error = refused.value
    assert (error.http_status, error.stripe_code) == (400, "resource_missing")
    assert error.stripe_param == "starting_after"

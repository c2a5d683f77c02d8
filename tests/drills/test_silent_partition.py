"""Drill: PostgreSQL or Redis stops answering without closing anything (a silent partition).

A TCP proxy in front of the server stalls: every socket stays open, new ones are accepted, and
nothing is forwarded either way (tests/proxy.py). Deliveries get a 503 within 10 s (Stripe
retries), /healthz keeps answering, a drain cut off mid-batch gives up and its row locks are
freed by the server, and once the proxy forwards again everything proceeds with no restart.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

import handlers
from tests.conftest import StripeSender, make_config
from tests.drills.stack import report
from tests.proxy import TcpProxy
from webhook_service.processing import drain
from webhook_service.web.app import create_app
from webhook_service.web.services import get_services

#: SPEC: a database that stops answering gets a 503 within 10 s.
RECEIVER_BOUND = 10.0


def _through(url: str, proxy: TcpProxy, **query) -> str:
    return sa.engine.make_url(url).set(port=proxy.port, query=query).render_as_string(hide_password=False)


@pytest.fixture
def pg_proxy(postgresql_database_url):
    url = sa.engine.make_url(postgresql_database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxy.start()
    yield proxy
    proxy.stop()


def _app(database_url: str, redis_url: str, **overrides):
    app = create_app(make_config(database_url, redis_url, **overrides))
    get_services(app).queue.connection.flushdb()
    return app


def _timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def _statuses(direct) -> dict[str, str]:
    with direct.connect() as conn:
        return dict(conn.execute(sa.text("SELECT id, status FROM stripe_events")).all())


def test_receiver_answers_503_within_10s_and_recovers_without_restart(
    pg_proxy, direct, postgresql_database_url, redis_url, fixture_events
):
    app = _app(_through(postgresql_database_url, pg_proxy), redis_url)
    client = app.test_client()
    sender = StripeSender(client)
    first, during, after = fixture_events[0], fixture_events[1:4], fixture_events[4:6]
    assert sender.post(first).status_code == 200  # the pool now holds a live connection

    pg_proxy.stall()
    answers, healths = [], []
    for event in during:
        response, took = _timed(lambda event=event: sender.post(event))
        assert response.status_code == 503 and took < RECEIVER_BOUND, (response.status_code, took)
        answers.append(took)
        health, took = _timed(lambda: client.get("/healthz"))
        assert health.status_code == 200 and took < 1.0
        healths.append(took)
    ready, took = _timed(lambda: client.get("/readyz"))
    assert ready.status_code == 503 and took < 5.0
    assert "database" in ready.get_json()["message"]

    pg_proxy.restore()
    healed = time.monotonic()
    while sender.post(during[0]).status_code != 200:  # Stripe's retries, 0.1 s apart
        assert time.monotonic() - healed < 10
        time.sleep(0.1)
    recovered = time.monotonic() - healed
    for event in during + after:
        assert sender.post(event).status_code == 200
    report("postgres-silent-partition", delivery_503_max_s=round(max(answers), 3),
           healthz_max_s=round(max(healths), 3), readyz_503_s=round(took, 3),
           first_200_after_heal_s=round(recovered, 3))  # fmt: skip
    assert client.get("/readyz").status_code == 200
    kept = _statuses(direct)
    assert {first["id"], *(e["id"] for e in during + after)} <= set(kept)  # acknowledged = kept
    get_services(app).db.engine.dispose()


def test_a_drain_cut_off_mid_batch_gives_up_and_its_locks_are_released(
    pg_proxy, direct, postgresql_database_url, redis_url, fixture_events, monkeypatch
):
    # Tight server-side limits so the drill is quick: statement 1 s (the client gives up 2 s
    # later), a transaction left idle 2 s.
    app = _app(
        _through(postgresql_database_url, pg_proxy),
        redis_url,
        database_statement_timeout=1,
        database_idle_in_transaction_timeout=2,
    )
    services = get_services(app)
    sender = StripeSender(app.test_client())
    events = [e for e in fixture_events if e["type"].startswith("invoice.")][:6]
    for event in events:
        assert sender.post(event).status_code == 200

    real = handlers.handle
    calls = {"n": 0}

    def handle(event, session):  # the partition starts in the middle of the batch
        calls["n"] += 1
        if calls["n"] == 2:
            pg_proxy.stall()
        return real(event, session)

    monkeypatch.setattr(handlers, "handle", handle)
    with pytest.raises(sa.exc.DBAPIError), ThreadPoolExecutor(1) as pool:
        future = pool.submit(drain.drain, services.db, services.queue, 100)
        started = time.monotonic()
        try:
            future.result(timeout=30)
        finally:
            gave_up_after = time.monotonic() - started
    assert gave_up_after < 8.0  # answer bound 3 s, plus a rollback on a connection it closes
    cut_off = time.monotonic()
    monkeypatch.setattr(handlers, "handle", real)

    # Meanwhile a drain with a healthy path (another machine) gets the rows once the server has
    # ended the stalled transaction (idle_in_transaction_session_timeout), not minutes later.
    healthy = _app(postgresql_database_url, redis_url)
    deadline = time.monotonic() + 15
    while set(_statuses(direct).values()) != {"processed"} and time.monotonic() < deadline:
        drain.drain(get_services(healthy).db, get_services(healthy).queue, 100)
        time.sleep(0.2)
    assert set(_statuses(direct).values()) == {"processed"}
    report("postgres-silent-partition-drain", drain_gave_up_s=round(gave_up_after, 3),
           other_drain_done_after_s=round(time.monotonic() - cut_off, 3))  # fmt: skip
    with direct.connect() as conn:
        idle = conn.scalar(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%'"
            )
        )
    assert idle == 0

    # Healed: the first app's own drain and receiver work again, with no restart.
    pg_proxy.restore()
    assert sender.post(dict(events[0], id="evt_after_heal")).status_code == 200
    assert drain.drain(services.db, services.queue, 100).processed == 1
    for application in (app, healthy):
        get_services(application).db.engine.dispose()


def test_redis_silent_partition_gives_503_within_10s_and_recovers(
    private_redis, postgresql_database_url, direct, fixture_events
):
    proxy = TcpProxy("127.0.0.1", private_redis.port)
    proxy.start()
    try:
        app = _app(postgresql_database_url, f"redis://127.0.0.1:{proxy.port}/0")
        client = app.test_client()
        sender = StripeSender(client)
        assert sender.post(fixture_events[0]).status_code == 200
        proxy.stall()
        queued = next(e for e in fixture_events[1:] if e["type"].startswith("invoice."))
        response, took_503 = _timed(lambda: sender.post(queued))
        assert response.status_code == 503 and took_503 < RECEIVER_BOUND, (response.status_code, took_503)
        ready, took = _timed(lambda: client.get("/readyz"))
        assert ready.status_code == 503 and took < 5.0
        assert client.get("/healthz").status_code == 200
        proxy.restore()
        healed = time.monotonic()
        assert sender.post(queued).status_code == 200  # Stripe's retry: recorded already, now queued
        report("redis-silent-partition", delivery_503_s=round(took_503, 3), readyz_503_s=round(took, 3),
               first_200_after_heal_s=round(time.monotonic() - healed, 3))  # fmt: skip
        assert client.get("/readyz").status_code == 200
        get_services(app).db.engine.dispose()
    finally:
        proxy.stop()


@pytest.mark.slow
def test_healthz_answers_within_1s_while_gunicorn_threads_wait_on_a_stalled_database(
    pg_proxy, direct, postgresql_database_url, redis_url, fixture_events, tmp_path
):
    """The real server: one gthread process with 4 threads, 16 deliveries at once into a
    stalled database. Every delivery gets its 503 within 10 s and /healthz never waits 1 s."""
    import json
    import os
    import subprocess
    import sys

    import requests

    from tests.conftest import SECRET, free_port
    from webhook_service.core.signature import sign

    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "GUNICORN_THREADS": "4",
        "DATABASE_URL": _through(postgresql_database_url, pg_proxy),
        "REDIS_URL": redis_url,
        "STRIPE_WEBHOOK_SECRETS": SECRET,
        "LOG_LEVEL": "WARNING",
    }
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    log = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "wsgi:app", "--config", "gunicorn.conf.py"],
        cwd=root, env=env, stdout=log, stderr=log,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)

        def deliver(n: int) -> tuple[int, float]:
            body = json.dumps(dict(fixture_events[0], id=f"evt_stall_{n}")).encode()
            headers = {"Stripe-Signature": sign(body, SECRET), "Content-Type": "application/json"}
            started = time.monotonic()
            response = requests.post(f"{base}/webhooks/stripe", data=body, headers=headers, timeout=30)
            return response.status_code, time.monotonic() - started

        assert deliver(0)[0] == 200  # warm: a pooled connection exists
        pg_proxy.stall()
        health: list[float] = []
        with ThreadPoolExecutor(17) as pool:
            answers = [pool.submit(deliver, n) for n in range(1, 17)]
            time.sleep(0.3)
            until = time.monotonic() + 9
            while time.monotonic() < until:
                started = time.monotonic()
                assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
                health.append(time.monotonic() - started)
                time.sleep(0.2)
            results = [answer.result() for answer in answers]
        assert {status for status, _ in results} == {503}, results
        assert max(took for _, took in results) < RECEIVER_BOUND, results
        assert max(health) < 1.0, health
        pg_proxy.restore()
        time.sleep(1.2)
        assert deliver(100)[0] == 200  # healed, same process
        report("postgres-silent-partition-gunicorn", delivery_503_max_s=round(max(t for _, t in results), 3),
               healthz_max_s=round(max(health), 3))  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()

"""Group-committed intake on the real databases and Redis: each event once, each answer its own."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import clean_tables
from tests.helpers import examples
from webhook_service.core.models import StripeEvent
from webhook_service.processing import eventlog
from webhook_service.processing.envelope import parse_envelope
from webhook_service.processing.intake import Intake

pytestmark = pytest.mark.pgbouncer


def _delivery(event: dict, event_id: str) -> tuple:
    body = json.dumps(dict(event, id=event_id)).encode()
    return parse_envelope(body), body


def _logged_ids(services) -> list[str]:
    with services.db.sessions() as session:
        return list(session.scalars(sa.select(StripeEvent.id).order_by(StripeEvent.id)))


def test_concurrent_deliveries_with_duplicates_are_each_recorded_once(services, fixture_events):
    # 16 threads deliver 40 distinct ids, each three times, concurrently (as a burst of Stripe
    # retries would); groups form in the intake and may contain the same id more than once.
    template = next(e for e in fixture_events if e["type"].startswith("invoice."))
    ids = [f"evt_intake_{n:03d}" for n in range(40)]
    deliveries = [_delivery(template, event_id) for event_id in ids * 3]

    # One place per thread: this test is about duplicates within groups, not about shedding load
    # (with the app's 7 places, a write slower than 0.5 s on a loaded machine turns the other
    # threads away with a 503, as it should; tests/drills cover that).
    intake = Intake(services.db.engine, services.queue, max_inside=16)

    def accept(delivery):
        return delivery[0].id, intake.accept(*delivery)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(accept, deliveries))

    new = [event_id for event_id, inserted in answers if inserted]
    assert sorted(new) == ids  # exactly one delivery of each id was told "new"
    assert _logged_ids(services) == ids
    assert services.queue.connection.exists(services.queue.ticket_key)  # a drain was requested


def test_redis_down_fails_only_the_deliveries_that_need_a_drain(services, fixture_events):
    template = next(e for e in fixture_events if e["type"].startswith("invoice."))
    queued = _delivery(template, "evt_needs_drain")
    ignored = _delivery(dict(template, type="charge.refunded"), "evt_ignored_type")
    dead_queue = type(services.queue)(
        connection=redis.Redis(port=1, socket_connect_timeout=0.5),
        queue=services.queue.queue,
        retry_intervals=services.queue.retry_intervals,
    )
    outcomes = Intake(services.db.engine, dead_queue)._write([queued, ignored])
    assert isinstance(outcomes[0], redis.ConnectionError) and outcomes[1] is True
    assert _logged_ids(services) == ["evt_ignored_type", "evt_needs_drain"]  # both kept all the same


@settings(
    max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.lists(st.integers(0, 6), min_size=1, max_size=8), min_size=1, max_size=4))
def test_a_batch_reports_new_exactly_for_first_sightings(services, fixture_events, batches):
    clean_tables(services.db.engine)
    template = next(e for e in fixture_events if e["type"].startswith("invoice."))
    seen: set[int] = set()
    for batch in batches:
        outcome = eventlog.record_events(
            services.db.engine, [_delivery(template, f"evt_prop_{n}") for n in batch]
        )
        expected = []
        for n in batch:
            expected.append(n not in seen)
            seen.add(n)
        assert outcome == expected
    assert _logged_ids(services) == sorted(f"evt_prop_{n}" for n in seen)


@pytest.mark.postgresql_only
def test_nothing_is_prepared_server_side(services, fixture_events):
    """A transaction-pooling PgBouncer (1.18) cannot keep named prepared statements: none are made."""
    assert services.db.engine.dialect.name == "postgresql"
    template = next(e for e in fixture_events if e["type"].startswith("invoice."))
    for n in range(12):  # psycopg's default would prepare anything run 5 times
        eventlog.record_events(services.db.engine, [_delivery(template, f"evt_prep_{n}")])
        _logged_ids(services)
    with services.db.engine.connect() as conn:  # pool_size 5: one of the connections used above
        assert conn.scalar(sa.text("SELECT count(*) FROM pg_prepared_statements")) == 0

"""Drill: every event delivered three times, in random order, through HTTP and a real worker."""

import random

import pytest

from tests.conftest import clean_tables
from tests.helpers import mirror_state, run_worker
from webhook_service.processing.sweep import sweep_past_due
from webhook_service.web.services import get_services

pytestmark = pytest.mark.pgbouncer


def _deliver_and_process(app, stripe, events, seed=None):
    clean_tables(get_services(app).db.engine)
    deliveries = list(events)
    if seed is not None:
        deliveries = deliveries * 3
        random.Random(seed).shuffle(deliveries)
    for event in deliveries:
        assert stripe.post(event).status_code == 200
    run_worker(app)
    sweep_past_due(get_services(app).db)
    return mirror_state(app)


def test_three_deliveries_in_random_order_end_like_one_in_order(app, stripe, fixture_events):
    in_order = _deliver_and_process(app, stripe, fixture_events)
    assert len(in_order["notifications"]) == 6  # one per audience per episode: 3 past-due invoices
    for seed in (1, 2):
        assert _deliver_and_process(app, stripe, fixture_events, seed=seed) == in_order

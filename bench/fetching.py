"""Stripe API calls per 1,000 events, and the drain rate with fetches on, for a realistic mix.

usage: python bench/fetching.py [--invoices 300] [--latency-ms 0] [--rate 100] [--batch-size 500]

A billing run's events (basil-and-later payloads, as Stripe sends them today): per invoice
created, finalized, paid and payment_succeeded (same second), a tenth with a failed payment first,
a tenth edited by a credit note; 15% of invoices have 15 lines, so their payloads carry the first
10 with `has_more`; 2% get two invoice.updated in one second that record nothing about each other
(a tie only a fetch settles); a customer.updated for every fifth invoice. Prices come from a pool
of 12, metered and licensed. A threaded fake of Stripe's API (tests/fetching/fake_stripe.py) holds
every object's final state and counts requests; `--latency-ms` delays each answer.

The same backlog is drained by one worker (the worker's own `drain.drain`) three times, each on a
fresh database: without an API key (the baseline), with a key, and with a key and
STRIPE_REVALIDATE=invoice,customer. Prints calls per 1,000 events by endpoint and each drain's
rate as a ratio to the baseline measured in this run. The request budget is on (`--rate`
requests/s, Stripe's live limit by default), so a drain can never outrun Stripe's rate limit.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(REPO / "fixtures")]

import sqlalchemy as sa  # noqa: E402
from builder import NEW_API, Customer, CustomerHistory, Ids, InvoiceLifecycle, Line  # noqa: E402

from bench.scratch import scratch_database  # noqa: E402
from tests.fetching.fake_stripe import FakeStripe  # noqa: E402

T0 = 1_790_500_000
KEY = "sk_test_fake"
PRICES = [(f"price_1Bench{n:02d}", "metered" if n % 3 == 0 else "licensed") for n in range(12)]


def build_mix(invoices: int, fake: FakeStripe) -> list[dict]:
    """The events, in true order, and Stripe's final state of every object put into `fake`."""
    ids = Ids("bench-fetching")
    customers = [
        Customer(ids.make("cus"), f"Bench {n}", f"b{n}@example.com") for n in range(max(invoices // 10, 1))
    ]
    histories = {c.id: CustomerHistory(ids, c, NEW_API) for c in customers}
    events: list[dict] = []
    for history in histories.values():
        events.append(history.created(T0 - 1000))
    for i in range(invoices):
        width = 15 if i % 20 < 3 else 3
        lines = [
            Line(ids.make("il"), f"Item {n}", 1000 + n, 1, PRICES[(i + n) % len(PRICES)][0], "prod_1Bench")
            for n in range(width)
        ]
        customer = customers[i % len(customers)]
        at = T0 + i * 10
        life = InvoiceLifecycle(ids, customer, NEW_API, at, lines, number=f"FB-{i:06d}")
        mine = [life.created(at), life.finalized(at + 3600)]
        if i % 10 == 0:
            mine.append(life.payment_failed(at + 3605))
        if i % 10 == 5:
            mine.append(life.credit_noted(at + 3610, pre=500))
        if i % 50 == 7:
            first, second = life.updated(at + 3620), life.updated(at + 3620)
            first["data"]["object"]["amount_remaining"] -= 1
            first["data"]["previous_attributes"] = {"footer": None}
            second["data"]["previous_attributes"] = {"footer": "x"}
            mine += [first, second]
        mine += life.paid(at + 7200)
        fake.put_invoice(copy.deepcopy(mine[-1]["data"]["object"]))
        for event in mine:
            lines_list = event["data"]["object"]["lines"]
            if len(lines_list["data"]) > 10:
                lines_list["data"], lines_list["has_more"] = lines_list["data"][:10], True
        events += mine
        if i % 5 == 0:
            history = histories[customer.id]
            events.append(history.balance_changed(at + 7300, history.balance - 100))
    for history in histories.values():
        fake.put("customers", history._object())
    for price_id, usage in PRICES:
        fake.put("prices", {"id": price_id, "object": "price", "recurring": {"usage_type": usage}})
    return events


def run(
    events: list[dict], fake: FakeStripe, key: bool, revalidate: tuple[str, ...], rate: float, batch: int
):
    """(events/s, requests by endpoint) for one drain of the whole backlog on a fresh database."""
    from webhook_service.core.config import Config
    from webhook_service.processing import drain, eventlog
    from webhook_service.processing.envelope import parse_envelope
    from webhook_service.processing.stripe_client import endpoint_of
    from webhook_service.web.app import create_app
    from webhook_service.web.services import get_services

    with scratch_database("fetching") as url:
        config = Config(
            webhook_secrets=("whsec_bench_00000000",), database_url=url, database_url_is_default=False,
            redis_url=None, log_level="ERROR", stripe_api_key=KEY if key else None,
            stripe_api_base=fake.url, stripe_revalidate=revalidate, stripe_api_rate=rate,
            stripe_api_endpoint_rate=25.0, drain_batch_size=batch,
        )  # fmt: skip
        services = get_services(create_app(config))
        for event in events:
            body = json.dumps(event, separators=(",", ":")).encode()
            eventlog.record_event(services.db.engine, parse_envelope(body), body)
        with fake.lock:
            fake.state.requests.clear()
        began = time.perf_counter()
        result = drain.drain(
            services.db, services.queue, services.config.drain_batch_size, fetching=services.fetching
        )
        elapsed = time.perf_counter() - began
        assert not result.failed, result.failed[:3]
        with services.db.sessions() as session:
            incomplete = session.scalar(sa.text("SELECT count(*) FROM invoices WHERE NOT lines_complete"))
        by_endpoint = Counter(endpoint_of("GET", r.path) for r in fake.state.requests)
        services.db.engine.dispose()
        return len(events) / elapsed, by_endpoint, incomplete


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=300)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--rate", type=float, default=100.0, help="request budget, requests/s")
    parser.add_argument(
        "--batch-size", type=int, default=500, help="1 = a live trickle (each event alone), 500 = a backlog"
    )
    args = parser.parse_args()
    with FakeStripe() as fake:
        events = build_mix(args.invoices, fake)
        fake.state.latency = args.latency_ms / 1000
        print(f"{len(events)} events for {args.invoices} invoices; fake Stripe latency "
              f"{args.latency_ms:g} ms; budget {args.rate:g} requests/s; "
              f"batches of {args.batch_size}")  # fmt: skip
        batch = args.batch_size
        base, _, incomplete = run(events, fake, key=False, revalidate=(), rate=args.rate, batch=batch)
        print(f"no API key:            {base:8.0f} events/s (baseline); incomplete invoices: {incomplete}")
        for label, revalidate in (("key", ()), ("key + revalidation", ("invoice", "customer"))):
            rate, calls, incomplete = run(events, fake, True, revalidate, args.rate, batch)
            total = sum(calls.values())
            print(f"{label + ':':22s} {rate:8.0f} events/s = {rate / base:.2f}x the baseline; "
                  f"{total * 1000 / len(events):.0f} API calls per 1,000 events; "
                  f"incomplete: {incomplete}")  # fmt: skip
            for endpoint, count in sorted(calls.items()):
                print(f"    {endpoint:32s} {count * 1000 / len(events):7.1f} per 1,000 events")


if __name__ == "__main__":
    main()

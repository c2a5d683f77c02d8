"""`webhook-service backfill`: years of history from Stripe's list endpoints, against a Stripe-like
HTTP server (tests/fetching/fake_stripe.py, and localstripe), real Redis and each database."""

from __future__ import annotations

import copy
import itertools
import json
import os
import pty
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest
import redis
import sqlalchemy as sa
from builder import (
    NEW_API,
    Customer,
    CustomerHistory,
    Ids,
    InvoiceLifecycle,
    Line,
    credit_note,
    customer_object,
)

from tests.conftest import SECRET, free_port
from tests.fetching.fake_stripe import FakeStripe
from tests.fetching.test_localstripe import KEY as LOCALSTRIPE_KEY
from tests.fetching.test_localstripe import invoice_of_fourteen, localstripe  # noqa: F401 - fixtures
from tests.helpers import event_rows, invoke_cli
from tests.test_replay_progress import _read_all
from webhook_service import cli_backfill
from webhook_service.core.errors import StripeUnavailable
from webhook_service.core.models import BackfillCursor, CreditNote, Invoice, OperatorAction
from webhook_service.core.models import Customer as CustomerRow
from webhook_service.processing import backfill as backfilling
from webhook_service.processing import drain

KEY = "sk_test_fake"
#: Years ago: what resync's 30 days could never reach.
T = 1_600_000_000


@pytest.fixture
def fake():
    with FakeStripe() as server:
        yield server


@pytest.fixture
def config_overrides(fake):
    return {"stripe_api_key": KEY, "stripe_api_base": fake.url, "retry_intervals": ()}


@pytest.fixture
def env(database_url, redis_url, fake):
    """The environment of `webhook-service backfill` against this test's database, Redis and fake."""
    return {
        "DATABASE_URL": database_url, "REDIS_URL": redis_url, "STRIPE_API_KEY": KEY,
        "STRIPE_API_BASE": fake.url, "LOG_LEVEL": "WARNING", "STRIPE_WEBHOOK_SECRETS": SECRET,
    }  # fmt: skip


#: `webhook-service backfill` as a process.
COMMAND = [sys.executable, "-m", "webhook_service.cli", "backfill"]


def process_env(database_url: str, redis_url: str, fake: FakeStripe) -> dict[str, str]:
    """The environment of a `webhook-service` process: this one's, the service's variables replaced."""
    own = ("STRIPE_", "DATABASE_", "REDIS_", "SENTRY_", "WEBHOOK_SERVICE_")
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(own)},
        "DATABASE_URL": database_url, "REDIS_URL": redis_url, "STRIPE_API_KEY": KEY,
        "STRIPE_API_BASE": fake.url, "LOG_LEVEL": "WARNING",
    }  # fmt: skip


@dataclass
class History:
    """What a test put into the fake Stripe."""

    customers: list[str] = field(default_factory=list)
    invoices: list[str] = field(default_factory=list)
    long_invoices: list[str] = field(default_factory=list)
    credit_notes: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return self.customers + self.invoices + self.credit_notes


def put_history(
    fake: FakeStripe, seed: str, *, customers: int, invoices: int, credit_notes: int, long_every: int = 0,
    account: str | None = None, at: int = T,
) -> History:  # fmt: skip
    """Customers, invoices a minute apart (every `long_every`-th with 15 lines, of which Stripe embeds
    10) and pre-payment credit notes on the first invoices, as Stripe would list them."""
    ids, history = Ids(seed), History()
    people = [Customer(ids.make("cus"), f"Customer {n}", f"c{n}@example.com") for n in range(customers)]
    for n, person in enumerate(people):
        fake.put("customers", customer_object(person, at + n), account=account)
        history.customers.append(person.id)
    lives = []
    for n in range(invoices):
        long = bool(long_every) and n % long_every == 0
        lines = [Line(ids.make("il"), f"Seat {k}", 1000 + k) for k in range(15 if long else 2)]
        life = InvoiceLifecycle(ids, people[n % customers], NEW_API, at + 60 * n, lines,
                                number=f"{seed.upper()}-{n:04d}", collection_method="send_invoice",
                                account=account)  # fmt: skip
        life.finalized(at + 60 * n + 10)
        fake.put_invoice(life.events[-1]["data"]["object"], account=account)
        lives.append(life)
        history.invoices.append(life.id)
        if long:
            history.long_invoices.append(life.id)
    for n in range(credit_notes):
        note = credit_note(ids, lives[n], at + 60 * n + 30, amount=100, credit_type="pre_payment",
                           number=f"CN-{seed}-{n:04d}")  # fmt: skip
        fake.put_credit_note(note, account=account)
        history.credit_notes.append(note["id"])
    return history


def snapshots_by_object(app) -> dict[str, list[str]]:
    """Object id → the backfill snapshot events of it in the event log."""
    found: dict[str, list[str]] = {}
    for row in event_rows(app).values():
        if row.id.startswith("backfill_"):
            found.setdefault(row.object_id, []).append(row.id)
    return found


def cursors(services) -> dict[tuple[str, str, bool], BackfillCursor]:
    with services.db.sessions() as session:
        rows = session.scalars(sa.select(BackfillCursor))
        return {(row.resource, row.account, row.livemode): row for row in rows}


def backfill_actions(services) -> list[OperatorAction]:
    with services.db.sessions() as session:
        stmt = (
            sa.select(OperatorAction).where(OperatorAction.action == "backfill").order_by(OperatorAction.id)
        )
        return list(session.scalars(stmt))


def drain_all(services):
    return drain.drain(services.db, services.queue, 500, fetching=services.fetching)


def count(services, model) -> int:
    with services.db.sessions() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(model))


# ---- the whole history, once ---------------------------------------------------------------------


@pytest.mark.pgbouncer  # every feature works through transaction pooling
def test_backfill_records_every_object_once_with_all_its_lines_and_a_drain_mirrors_them(
    app, services, fake, env
):
    # GIVEN years of history: more than a page of each list, some invoices longer than Stripe embeds
    history = put_history(fake, "all", customers=130, invoices=230, credit_notes=40, long_every=50)
    # WHEN the operator backfills
    result = invoke_cli("backfill", env=env)
    # THEN every list was paged (customers, then invoices, then credit notes) and every object recorded
    assert result.exit_code == 0, result.output
    out = result.output
    assert "customers: 130 listed, 130 recorded (run of " in out
    assert "invoices: 230 listed, 230 recorded; 5 with their lines completed (run of " in out
    assert "credit_notes: 40 listed, 40 recorded (run of " in out
    pages = [r for r in fake.state.requests if not r.path.endswith("/lines")]
    assert [r.path for r in pages] == ["/v1/customers"] * 2 + ["/v1/invoices"] * 3 + ["/v1/credit_notes"]
    assert [dict(r.params).get("starting_after") for r in pages[:2]] == [None, history.customers[-100]]
    lines = [r.path for r in fake.state.requests if r.path.endswith("/lines")]
    assert sorted(lines) == sorted(f"/v1/invoices/{i}/lines" for i in history.long_invoices)
    assert f"{len(fake.state.requests)} requests to Stripe." in out
    assert {r.headers["Authorization"] for r in fake.state.requests} == {f"Bearer {KEY}"}
    assert KEY not in out
    snapshots = snapshots_by_object(app)
    assert sorted(snapshots) == sorted(history.ids) and all(len(ids) == 1 for ids in snapshots.values())
    asked = len(fake.state.requests)
    # AND a drain mirrors them, lines complete, without asking Stripe again
    drain_all(services)
    assert {row.status for row in event_rows(app).values()} == {"processed"}
    mirrored = [count(services, model) for model in (CustomerRow, Invoice, CreditNote)]
    assert mirrored == [130, 230, 40]
    with services.db.sessions() as session:
        for invoice_id in history.long_invoices:
            invoice = session.get(Invoice, invoice_id)
            assert invoice.lines_complete is True and len(invoice.lines) == 15
            assert sum(line.amount for line in invoice.lines) == invoice.subtotal
        assert session.get(CreditNote, history.credit_notes[0]).invoice_id == history.invoices[0]
        action = session.scalars(sa.select(OperatorAction).where(OperatorAction.action == "backfill")).one()
    assert len(fake.state.requests) == asked
    assert action.actor.startswith("cli:") and action.parameters["only"] == list(backfilling.RESOURCES)
    assert action.result["invoices"] == {"listed": 230, "recorded": 230, "duplicates": 0, "finished": True}
    assert all(row.finished_at is not None for row in cursors(services).values())


def test_a_finished_backfill_starts_a_new_run_and_dry_run_and_since_only_count(app, services, fake, env):
    history = put_history(fake, "again", customers=3, invoices=4, credit_notes=1)
    assert invoke_cli("backfill", env=env).exit_code == 0
    first = snapshots_by_object(app)
    # A dry run lists and counts, records nothing and moves no cursor.
    before = {key: (row.run_started_at, row.finished_at) for key, row in cursors(services).items()}
    fake.state.requests.clear()
    dry = invoke_cli("backfill", "--dry-run", "--since", "2020-09-13T12:29:40", env=env)
    assert dry.exit_code == 0, dry.output
    since = {dict(r.params)["created[gte]"] for r in fake.state.requests}
    assert since == {str(T + 180)}  # the last invoice's second
    assert "customers: 0 listed" in dry.output and "invoices: 1 listed" in dry.output
    assert "Dry run: nothing recorded, no cursor moved." in dry.output
    assert snapshots_by_object(app) == first
    assert {key: (row.run_started_at, row.finished_at) for key, row in cursors(services).items()} == before
    # A real run after a finished one is a new run: a new observation of every object.
    again = invoke_cli("backfill", "--only", "invoices", env=env)
    assert again.exit_code == 0, again.output
    assert "invoices: 4 listed, 4 recorded" in again.output and "customers" not in again.output
    second = snapshots_by_object(app)
    assert all(len(second[i]) == 2 for i in history.invoices)
    assert all(len(second[i]) == 1 for i in history.customers + history.credit_notes)


def test_connect_account_backfill_asks_with_stripe_account_and_mirrors_the_accounts_rows(
    app, services, fake, env
):
    platform = put_history(fake, "platform", customers=2, invoices=2, credit_notes=0)
    connected = put_history(fake, "connected", customers=2, invoices=3, credit_notes=1, long_every=2,
                            account="acct_1Connected")  # fmt: skip
    result = invoke_cli("backfill", "--account", "acct_1Connected", env=env)
    assert result.exit_code == 0, result.output
    assert "invoices of acct_1Connected: 3 listed, 3 recorded; 2 with their lines completed" in result.output
    assert {r.headers.get("Stripe-Account") for r in fake.state.requests} == {"acct_1Connected"}
    assert sorted(snapshots_by_object(app)) == sorted(connected.ids)
    assert {row.account for row in event_rows(app).values()} == {"acct_1Connected"}
    drain_all(services)
    with services.db.sessions() as session:
        assert {row.account for row in session.scalars(sa.select(Invoice))} == {"acct_1Connected"}
        assert len(session.get(Invoice, connected.long_invoices[0]).lines) == 15
    assert set(cursors(services)) == {(r, "acct_1Connected", False) for r in backfilling.RESOURCES}
    assert invoke_cli("backfill", env=env).exit_code == 0  # the platform's own, with cursors of its own
    assert set(platform.ids) <= set(snapshots_by_object(app))


# ---- resuming --------------------------------------------------------------------------------------


@pytest.mark.pgbouncer  # every feature works through transaction pooling
def test_a_stopped_backfill_resumes_after_its_last_recorded_page(app, services, fake):
    history = put_history(fake, "resume", customers=120, invoices=250, credit_notes=30)
    fake.fail("/v1/invoices", 500, should_retry="false", after=1)  # the second page of invoices
    client = backfilling.build_backfill_client(services.config, services.queue.connection)
    with pytest.raises(backfilling.BackfillStopped) as stopped:
        backfilling.backfill(services.db, services.queue, client)
    assert isinstance(stopped.value.__cause__, StripeUnavailable)
    done = stopped.value.report
    assert [(item.resource, item.listed, item.finished) for item in done.lists] == [
        ("customers", 120, True), ("invoices", 100, False), ("credit_notes", 0, False),
    ]  # fmt: skip
    saved = cursors(services)
    invoices = saved["invoices", "", False]
    assert (invoices.starting_after, invoices.listed) == (history.invoices[-100], 100)
    assert len(snapshots_by_object(app)) == 220
    fake.state.requests.clear()
    report = backfilling.backfill(services.db, services.queue, backfilling.build_backfill_client(
        services.config, services.queue.connection))  # fmt: skip
    by_list = {item.resource: item for item in report.lists}
    assert by_list["customers"].skipped and by_list["invoices"].resumed
    assert (by_list["invoices"].listed, by_list["credit_notes"].listed) == (150, 30)
    assert [(r.path, dict(r.params).get("starting_after")) for r in fake.state.requests] == [
        ("/v1/invoices", history.invoices[-100]), ("/v1/invoices", history.invoices[-200]),
        ("/v1/credit_notes", None),
    ]  # fmt: skip
    snapshots = snapshots_by_object(app)
    assert sorted(snapshots) == sorted(history.ids) and all(len(ids) == 1 for ids in snapshots.values())
    runs = {event_id.rsplit("_", 1)[1] for ids in snapshots.values() for event_id in ids}
    assert len(runs) == 1  # one run, resumed: the same second in every snapshot id


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b'{"error": {"message": "upstream said no"}}',
        b'{"object": "list", "data": "oops", "has_more": false}',
        b'{"object": "list", "data": [{"object": "customer"}], "has_more": false}',
        b'{"object": "list", "data": []}',
    ],
    ids=["empty", "error", "data-not-a-list", "item-without-id", "no-has-more"],
)
def test_a_page_that_is_not_a_list_page_stops_the_list_unfinished_and_a_rerun_resumes(
    app, services, fake, body
):
    """A 200 whose body is no page of a list (a gateway's, a truncated one) is never read as the
    list's end: the list stays unfinished and the next run reads the rest."""
    history = put_history(fake, "malformed", customers=250, invoices=0, credit_notes=0)
    fake.fail("/v1/customers", 200, after=1, raw=body)  # the second page
    client = backfilling.build_backfill_client(services.config, services.queue.connection, max_attempts=1)
    with pytest.raises(backfilling.BackfillStopped) as stopped:
        backfilling.backfill(services.db, services.queue, client, resources=["customers"])
    assert "GET /v1/customers failed after 1 attempt(s): HTTP 200 with a list page " in str(
        stopped.value.__cause__
    )
    (item,) = stopped.value.report.lists
    assert (item.listed, item.finished) == (100, False)
    assert not cursors(services)["customers", "", False].finished_at
    (item,) = backfilling.backfill(services.db, services.queue, client, resources=["customers"]).lists
    assert item.resumed and item.listed == 150 and item.finished
    assert sorted(snapshots_by_object(app)) == sorted(history.ids)


def test_restart_ignores_an_unfinished_cursor(app, services, fake):
    put_history(fake, "restart", customers=150, invoices=0, credit_notes=0)
    fake.fail("/v1/customers", 500, should_retry="false", after=1)
    client = backfilling.build_backfill_client(services.config, services.queue.connection)
    with pytest.raises(backfilling.BackfillStopped):
        backfilling.backfill(services.db, services.queue, client, resources=["customers"])
    report = backfilling.backfill(services.db, services.queue, client, resources=["customers"], restart=True)
    (item,) = report.lists
    assert not item.resumed and item.listed == 150 and item.recorded == 150 and item.finished
    assert sum(len(ids) for ids in snapshots_by_object(app).values()) == 250  # 100 of the first run again


@pytest.mark.process
def test_a_backfill_killed_mid_way_resumes_with_nothing_missing_nothing_twice_and_fewer_requests(
    pg_app, postgresql_database_url, redis_url
):
    with FakeStripe() as fake:
        history = put_history(fake, "kill", customers=250, invoices=500, credit_notes=150, long_every=50)
        from_scratch = 3 + 5 + len(history.long_invoices) + 2  # pages of 100, plus the long invoices' lines
        fake.state.latency = 0.15
        env = process_env(postgresql_database_url, redis_url, fake)
        process = subprocess.Popen(COMMAND, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while len(fake.state.requests) < 14 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
        assert process.returncode == -signal.SIGKILL
        killed_after = len(fake.state.requests)
        assert _pg_backfill_actions(postgresql_database_url) == [
            {"state": "started"}
        ]  # a row says it started
        recorded = snapshots_by_object(pg_app)
        assert 0 < len(recorded) < len(history.ids)  # killed mid-way
        fake.state.requests.clear()
        rerun = subprocess.run(COMMAND, env=env, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        assert "customers: finished earlier in this backfill" in rerun.stdout
        assert "invoices: " in rerun.stdout and "(resumed the run of" in rerun.stdout
        assert "credit_notes: 150 listed, 150 recorded (run of " in rerun.stdout
        snapshots = snapshots_by_object(pg_app)
        assert sorted(snapshots) == sorted(history.ids)
        assert [i for i, ids in snapshots.items() if len(ids) != 1] == []
        resumed = len(fake.state.requests)
        # Requests 1-3 are the customers' pages, then 3 per page of invoices (its list and two long
        # invoices' lines): when the 14th went out, three pages of invoices had been committed.
        assert killed_after >= 14 and resumed <= from_scratch - 12, (killed_after, resumed)
        assert not any(r.path == "/v1/customers" for r in fake.state.requests)


# ---- Stripe's limits and refusals --------------------------------------------------------------------


def test_a_429_with_retry_after_is_waited_out_within_the_shared_budget(app, services, fake, env, redis_url):
    history = put_history(fake, "limits", customers=5, invoices=120, credit_notes=0)
    fake.fail("/v1/invoices", 429, retry_after="1", after=1)  # the second page: wait a second
    result = invoke_cli("backfill", env={**env, "STRIPE_API_RATE": "8"})
    assert result.exit_code == 0, result.output
    assert "requests to Stripe, 1 retried." in result.output
    pages = fake.requests_to("/v1/invoices")
    assert [r.status for r in pages] == [200, 429, 200]
    assert pages[2].at - pages[1].at >= 1.0  # Retry-After honoured
    assert sorted(snapshots_by_object(app)) == sorted(history.ids)
    # Every request took a slot from the budget the workers share (in Redis, named after the key's
    # digest): at STRIPE_API_RATE=8 no two requests went out closer than 1/8 s.
    budget = redis.Redis.from_url(redis_url).keys("stripe-budget:*")
    arrivals = [r.at for r in fake.state.requests]
    assert min(later - earlier for earlier, later in itertools.pairwise(arrivals)) >= 0.1
    assert any(key.endswith(b":account") for key in budget)
    assert any(b"GET /v1/invoices" in key for key in budget)


def test_bad_input_and_unreachable_services_get_one_clear_line(app, services, fake, env):
    put_history(fake, "errors", customers=1, invoices=0, credit_notes=0)
    no_key = invoke_cli("backfill", env={k: v for k, v in env.items() if k != "STRIPE_API_KEY"})
    assert no_key.exit_code == 2 and "STRIPE_API_KEY is not set" in no_key.output
    fake.state.api_key = "sk_test_another"
    refused = invoke_cli("backfill", env=env)
    assert refused.exit_code == 2
    assert "Stripe refused STRIPE_API_KEY (HTTP 401)" in refused.output
    assert KEY not in refused.output and "Traceback" not in refused.output
    nowhere = f"postgresql://127.0.0.1:{free_port()}/x"
    unreachable = invoke_cli("backfill", env={**env, "DATABASE_URL": nowhere})
    assert unreachable.exit_code == 2 and "Traceback" not in unreachable.output
    assert "webhook-service: error: cannot connect to DATABASE_URL" in unreachable.output
    no_redis = invoke_cli("backfill", env={**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert no_redis.exit_code == 2 and "Traceback" not in no_redis.output, no_redis.output
    assert "webhook-service: error: the backfill stopped: the shared request budget is unreachable" in (
        no_redis.output
    )
    assert "is REDIS_URL right?" in no_redis.output
    fake.state.api_key = KEY
    fake.fail("/v1/customers", 429, retry_after="3600")
    held_off = invoke_cli("backfill", "--only", "customers", env=env)
    assert held_off.exit_code == 2, held_off.output
    assert "\n1 request to Stripe.\n" in held_off.output
    future = invoke_cli("backfill", "--since", "2099-01-01", env=env)
    assert future.exit_code == 2 and "--since (2099-01-01T00:00:00+00:00) is in the future" in future.output
    assert (
        "the backfill stopped: GET /v1/customers failed after 1 attempt(s): Stripe asked to wait 3600 s"
        in (held_off.output)
    )
    bad = invoke_cli("backfill", "--account", "cus_1", env=env)
    assert bad.exit_code == 2 and "expected a Connect account id like acct_" in bad.output
    wrong = invoke_cli("backfill", "--only", "prices", env=env)
    assert wrong.exit_code == 2 and "'prices' is not one of" in wrong.output
    with services.db.sessions() as session:
        actions = session.scalars(sa.select(OperatorAction).where(OperatorAction.action == "backfill")).all()
    assert [action.result["error"][:40] for action in actions] == [
        "Stripe refused STRIPE_API_KEY (HTTP 401)", "the backfill stopped: the shared request",
        "the backfill stopped: GET /v1/customers ",
    ]  # fmt: skip


def test_an_invoice_gone_before_its_lines_are_read_is_recorded_as_listed(app, services, fake, env):
    history = put_history(fake, "gone", customers=1, invoices=2, credit_notes=0, long_every=1)
    gone = history.long_invoices[0]
    fake.fail(f"/v1/invoices/{gone}/lines", 404)
    result = invoke_cli("backfill", "--only", "invoices", env=env)
    assert result.exit_code == 0, result.output
    assert "2 listed, 2 recorded; 1 with their lines completed, 1 gone before their lines were read" in (
        result.output
    )
    (event_id,) = snapshots_by_object(app)[gone]
    lines = json.loads(event_rows(app)[event_id].payload)["data"]["object"]["lines"]
    assert (len(lines["data"]), lines["has_more"]) == (10, True)  # as listed: the drain completes or flags it


def test_the_cli_lists_are_the_backfills_lists():
    assert cli_backfill.LISTS == backfilling.RESOURCES


# ---- ordering against webhooks -------------------------------------------------------------------------


def _deliver(stripe, events) -> None:
    for event in events:
        assert stripe.post(event).status_code == 200


@pytest.mark.parametrize("webhook_first", [False, True], ids=["backfill-first", "webhook-first"])
@pytest.mark.parametrize("webhook_is", ["after-the-fetch", "before-the-fetch"])
def test_a_backfilled_snapshot_takes_the_webhooks_ordering_rules(
    app, stripe, services, fake, env, webhook_first, webhook_is
):
    """A webhook created after the fetch outranks the snapshot, and one created before it is outranked,
    whichever is processed first."""
    now = int(time.time())
    ids = Ids(f"order-{webhook_is}")
    person = Customer(ids.make("cus"), "Ordering Co", "order@example.com")
    customer = CustomerHistory(ids, person, NEW_API)
    customer.created(now - 8000)
    lines = [Line(ids.make("il"), "Seat", 10_000), Line(ids.make("il"), "Support", 2_000)]
    life = InvoiceLifecycle(ids, person, NEW_API, now - 8000, lines, number="ORD-1",
                            collection_method="send_invoice")  # fmt: skip
    finalized = life.finalized(now - 7000)  # open, 12,000 due
    if webhook_is == "after-the-fetch":
        # Stripe lists the invoice as finalized and the customer without credit; then, after the fetch
        # (a second the fetch cannot reach), a credit note lowers the amount due and credit is added.
        fake.put_invoice(copy.deepcopy(finalized["data"]["object"]))
        fake.put("customers", customer_object(person, now - 8000, balance=0))
        webhooks = [life.credit_noted(now + 120, pre=2_000), customer.balance_changed(now + 120, -500)]
        expected_due, expected_credit = 10_000, 500
    else:
        # The webhooks say what was true an hour ago; Stripe's objects have changed since (events that
        # were never delivered), and the fetch sees that.
        webhooks = [finalized, customer.balance_changed(now - 3600, -500)]
        later = copy.deepcopy(life.credit_noted(now - 1800, pre=2_000)["data"]["object"])
        fake.put_invoice(later)
        fake.put("customers", customer_object(person, now - 8000, balance=-300))
        expected_due, expected_credit = 10_000, 300

    def run_backfill():
        assert invoke_cli("backfill", "--only", "customers", "--only", "invoices", env=env).exit_code == 0

    steps = [lambda: _deliver(stripe, webhooks), run_backfill]
    for step in steps if webhook_first else reversed(steps):
        step()
        drain_all(services)
    assert {row.status for row in event_rows(app).values()} == {"processed"}
    assert any(event_id.startswith("backfill_") for event_id in event_rows(app))
    with services.db.sessions() as session:
        invoice = session.get(Invoice, life.id)
        assert (invoice.status, invoice.amount_due) == ("open", expected_due)
        assert session.get(CustomerRow, person.id).credit_balance == expected_credit


# ---- a terminal, and localstripe --------------------------------------------------------------------------


@pytest.mark.process
def test_on_a_terminal_each_list_shows_a_progress_bar(pg_app, postgresql_database_url, redis_url):
    with FakeStripe() as fake:
        put_history(fake, "bar", customers=250, invoices=10, credit_notes=0)
        fake.state.latency = 0.3
        master, slave = pty.openpty()
        env = {**process_env(postgresql_database_url, redis_url, fake), "COLUMNS": "100"}
        process = subprocess.Popen(
            [*COMMAND, "--only", "customers", "--only", "invoices"],
            stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
        )  # fmt: skip
        os.close(slave)
        shown = _read_all(master, time.monotonic() + 60)
        os.close(master)
        assert process.wait(timeout=30) == 0, shown
    assert "recording customers" in shown and "recording invoices" in shown, shown
    assert re.search(r"recording customers\s+\[[#\-\s]*\]\s+100\r", shown), shown  # page by page
    assert re.search(r"recording customers\s+\[[#\-\s]*\]\s+250\b", shown), shown
    assert "customers: 250 listed, 250 recorded" in shown, shown


def test_backfill_from_localstripe_pages_its_invoices_and_completes_their_lines(
    app, services, request, database_url, redis_url
):
    """localstripe (a stateful fake Stripe from PyPI) lists invoices, and embeds 10 of an invoice's
    14 lines; it has no credit notes, and refuses the `expand[]=data.invoice_credit_balance` that
    Stripe documents for customers (a 400, so its customers list is not read here)."""
    url = request.getfixturevalue("localstripe")  # the fixtures of tests/fetching/test_localstripe.py
    made = request.getfixturevalue("invoice_of_fourteen")
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "STRIPE_API_KEY": LOCALSTRIPE_KEY,
           "STRIPE_API_BASE": url, "LOG_LEVEL": "WARNING"}  # fmt: skip
    result = invoke_cli("backfill", "--only", "invoices", env=env)
    assert result.exit_code == 0, result.output
    assert "invoices: 1 listed, 1 recorded; 1 with their lines completed" in result.output
    drain_all(services)
    with services.db.sessions() as session:
        invoice = session.get(Invoice, made["id"])
        assert invoice is not None and invoice.lines_complete is True and len(invoice.lines) == 14
        assert sum(line.amount for line in invoice.lines) == invoice.subtotal
        assert session.get(CustomerRow, made["customer"]) is not None  # created by its invoice


# ---- modes, vanished cursors, interruptions, concurrent runs (review of the first version) ---------------


def test_a_live_key_run_never_resumes_a_test_key_runs_cursor(app, services, fake, env):
    # GIVEN a test-key backfill stopped in its invoices
    history = put_history(fake, "modes", customers=3, invoices=150, credit_notes=0)
    fake.fail("/v1/invoices", 500, should_retry="false", after=1)
    client = backfilling.build_backfill_client(services.config, services.queue.connection)
    with pytest.raises(backfilling.BackfillStopped):
        backfilling.backfill(services.db, services.queue, client)
    assert cursors(services)["invoices", "", False].starting_after == history.invoices[-100]
    # WHEN a live key backfills the same account
    fake.state.api_key = live = "sk_live_fake"
    fake.state.requests.clear()
    result = invoke_cli("backfill", env={**env, "STRIPE_API_KEY": live})
    # THEN it is a run of its own: customers listed, invoices from the newest, no test-mode cursor sent
    assert result.exit_code == 0, result.output
    assert "customers: 3 listed" in result.output and "finished earlier" not in result.output
    firsts = [r for r in fake.state.requests if "starting_after" not in dict(r.params)]
    assert [r.path for r in firsts] == ["/v1/customers", "/v1/invoices", "/v1/credit_notes"]
    saved = cursors(services)
    assert saved["invoices", "", True].finished_at is not None
    assert saved["invoices", "", False].finished_at is None  # the test run still resumes where it stopped
    assert backfill_actions(services)[-1].parameters["mode"] == "live"


def test_a_cursor_object_deleted_since_resumes_at_its_created_second(app, services, fake, env):
    # GIVEN a backfill stopped after its first page of customers (one created per second), and the
    # last customer it recorded deleted in Stripe since
    history = put_history(fake, "deleted", customers=250, invoices=0, credit_notes=0)
    fake.fail("/v1/customers", 500, should_retry="false", after=1)
    client = backfilling.build_backfill_client(services.config, services.queue.connection)
    with pytest.raises(backfilling.BackfillStopped):
        backfilling.backfill(services.db, services.queue, client, resources=["customers"])
    cursor = cursors(services)["customers", "", False]
    gone = history.customers[-100]
    assert (cursor.starting_after, cursor.starting_after_created) == (gone, T + 150)
    fake.delete("customers", gone)
    fake.state.requests.clear()
    # WHEN it is run again
    result = invoke_cli("backfill", "--only", "customers", env=env)
    # THEN Stripe's 400 for the vanished cursor is answered by listing from its second on
    assert result.exit_code == 0, result.output
    assert "resumed at its last object's second" in result.output
    asked = [(r.status, dict(r.params).get("starting_after"), dict(r.params).get("created[lte]"))
             for r in fake.state.requests]  # fmt: skip
    assert asked[:2] == [(400, gone, None), (200, None, str(T + 150))]
    snapshots = snapshots_by_object(app)
    assert sorted(snapshots) == sorted(history.customers) and all(len(i) == 1 for i in snapshots.values())
    assert cursors(services)["customers", "", False].finished_at is not None


def test_customers_are_listed_with_their_credit_in_every_currency(app, services, fake, env):
    # GIVEN a customer with USD credit (its own currency) and EUR credit, which Stripe states only
    # in `invoice_credit_balance`, and only when asked to expand it
    ids = Ids("currencies")
    person = Customer(ids.make("cus"), "Two Currencies", "two@example.com")
    customer = customer_object(person, T, balance=-700)
    customer["invoice_credit_balance"] = {"usd": 700, "eur": 300}
    fake.put("customers", customer)
    # WHEN it is backfilled and drained
    assert invoke_cli("backfill", "--only", "customers", env=env).exit_code == 0
    (listed,) = fake.requests_to("/v1/customers")
    assert ("expand[]", "data.invoice_credit_balance") in listed.params
    drain_all(services)
    # THEN the mirror keeps both currencies' credit
    with services.db.sessions() as session:
        row = session.get(CustomerRow, person.id)
        assert (row.credit_balance, row.credit_balances) == (700, {"usd": 700, "eur": 300})


def test_a_page_is_observed_at_the_second_its_request_was_sent(app, services, fake):
    # GIVEN a clock that ticks once per request Stripe receives
    history = put_history(fake, "clock", customers=150, invoices=0, credit_notes=0)
    client = backfilling.build_backfill_client(services.config, services.queue.connection)
    base = int(time.time())

    def clock() -> float:
        return base + len(fake.state.requests)

    # WHEN the two pages are read
    backfilling.backfill(services.db, services.queue, client, resources=["customers"], clock=clock)
    # THEN each snapshot is marked with the second before its page's request, not the one after
    fetched = {row.object_id: json.loads(row.payload)["_fetched_at"] for row in event_rows(app).values()}
    assert {fetched[i] for i in history.customers[-100:]} == {base}
    assert {fetched[i] for i in history.customers[:-100]} == {base + 1}


def test_an_object_id_too_long_for_an_event_id_is_recorded_and_a_refused_one_is_named(
    app, services, fake, env
):
    long_id, longer_id = "cus_" + "L" * 240, "cus_" + "X" * 300  # 244 fits the mirror, 304 does not
    for n, object_id in enumerate((long_id, longer_id)):
        fake.put("customers", customer_object(Customer(object_id, f"Long {n}", f"l{n}@example.com"), T + n))
    result = invoke_cli("backfill", "--only", "customers", env=env)
    assert result.exit_code == 0, result.output
    assert "customers: 2 listed, 1 recorded; 1 refused (below)" in result.output
    assert f"  refused {longer_id[:57]}…: " in result.output and "object_id longer than 255" in result.output
    (event_id,) = snapshots_by_object(app)[long_id]
    assert len(event_id) <= 255 and event_id.startswith("backfill_sha256-")
    drain_all(services)
    with services.db.sessions() as session:
        assert session.get(CustomerRow, long_id).name == "Long 0"
    assert backfill_actions(services)[-1].result["customers"]["refused"] == {"ids": [longer_id]}


@pytest.mark.parametrize(("accept", "key"), [("live", KEY), ("test", "sk_live_fake")])
def test_a_key_of_the_mode_accept_mode_ignores_is_refused_at_start(app, services, fake, env, accept, key):
    result = invoke_cli("backfill", env={**env, "STRIPE_ACCEPT_MODE": accept, "STRIPE_API_KEY": key})
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"webhook-service: error: STRIPE_ACCEPT_MODE={accept} but STRIPE_API_KEY is a " in result.output
    assert "every object would be recorded as ignored" in result.output and key not in result.output
    assert fake.state.requests == [] and backfill_actions(services) == []


@pytest.mark.pgbouncer  # every feature works through transaction pooling
def test_a_second_backfill_of_the_same_list_stops_the_first_instead_of_moving_its_cursor(app, services, fake):
    # GIVEN a backfill of 250 customers, and a second one of the same list run after its first page
    history = put_history(fake, "twice", customers=250, invoices=0, credit_notes=0)
    client = backfilling.build_backfill_client(services.config, services.queue.connection)
    second: list[backfilling.BackfillReport] = []

    def run_another(item, count):
        if not second:
            second.append(backfilling.backfill(services.db, services.queue, client, resources=["customers"]))

    # WHEN the first one goes on THEN it stops at its next page, naming the conflict
    with pytest.raises(backfilling.BackfillStopped) as stopped:
        backfilling.backfill(
            services.db, services.queue, client, resources=["customers"], progress=run_another
        )
    assert isinstance(stopped.value.__cause__, backfilling.BackfillConflict)
    assert "another backfill of customers (the platform, test mode)" in str(stopped.value.__cause__)
    # AND the cursor says what the second one did: every customer listed once, finished
    (item,) = second[0].lists
    assert item.resumed and item.finished
    cursor = cursors(services)["customers", "", False]
    assert cursor.listed == 250 and cursor.finished_at is not None
    assert cursor.starting_after == history.customers[0]


@pytest.mark.process
def test_an_interrupted_backfill_is_audited_with_what_it_did(pg_app, postgresql_database_url, redis_url):
    with FakeStripe() as fake:
        put_history(fake, "sigint", customers=900, invoices=0, credit_notes=0)
        fake.state.latency = 0.2
        env = process_env(postgresql_database_url, redis_url, fake)
        process = subprocess.Popen(
            COMMAND, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 60
        while len(fake.state.requests) < 4 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "Interrupted: what was recorded is kept" in err and "Traceback" not in err
    assert "customers: " in out and "not finished" in out
    (action,) = _pg_backfill_actions(postgresql_database_url)
    assert action["state"] == "interrupted" and 300 <= action["customers"]["listed"] < 900


def _pg_backfill_actions(url: str) -> list[dict]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            stmt = sa.select(OperatorAction.result).where(OperatorAction.action == "backfill")
            return list(connection.scalars(stmt.order_by(OperatorAction.id)))
    finally:
        engine.dispose()

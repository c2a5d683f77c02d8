"""`webhook-service reconcile`: drift between the mirror and Stripe, found, reported and repaired.

Real parts throughout: the receiver and a real RQ worker build the mirror from signed webhooks,
tests/fetching/fake_stripe.py serves Stripe's side over HTTP (the list endpoint with its
filters and pages, retrieves, 404s), and the command runs in-process with click's runner.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import time_machine
from builder import NEW_API, Customer, CustomerHistory, Ids, InvoiceLifecycle, Line, customer_object
from prometheus_client.parser import text_string_to_metric_families
from rq.cron import get_cron_job_history_key

from jobs import reconcile as reconcile_jobs
from tests.conftest import SECRET
from tests.fetching.fake_stripe import FakeStripe
from tests.helpers import invoke_cli, run_worker
from webhook_service.core.config import load_config
from webhook_service.core.errors import ConfigError
from webhook_service.core.models import (
    Customer as CustomerRow,
)
from webhook_service.core.models import (
    CustomerBalance,
    Invoice,
    InvoiceStatusChange,
    OperatorAction,
    ReconcileRun,
    StripeEvent,
)
from webhook_service.startup import check_role
from webhook_service.workers import AppCronScheduler

KEY = "sk_test_fake"
#: Five days ago: inside the default window (RECONCILE_DAYS, 60 days).
T = int(time.time()) - 5 * 86400


@pytest.fixture
def fake():
    with FakeStripe() as server:
        yield server


@pytest.fixture
def config_overrides(fake):
    return {"stripe_api_key": KEY, "stripe_api_base": fake.url}


@pytest.fixture
def env(database_url, redis_url, fake):
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "STRIPE_WEBHOOK_SECRETS": SECRET,
        "STRIPE_API_KEY": KEY,
        "STRIPE_API_BASE": fake.url,
    }


def run(env, *args, **extra):
    result = invoke_cli("--actor", "cli:test-operator", "reconcile", *args, env={**env, **extra})
    return result


def report_of(result) -> dict:
    return json.loads(result.stdout)


def deliver(stripe, events) -> None:
    for event in events:
        assert stripe.post(event).status_code == 200


def last_object(life: InvoiceLifecycle) -> dict:
    return life.events[-1]["data"]["object"]


class Book:
    """One customer's invoices, as Stripe has them and as the webhooks that reached us said."""

    def __init__(self, seed: str):
        self.ids = Ids(seed)
        self.who = Customer(self.ids.make("cus"), f"Drift {seed} Ltd", f"billing-{seed}@example.com")
        self.history = CustomerHistory(self.ids, self.who, NEW_API)
        self.history.balance = -2000  # 2,000 of credit when the customer was created

    def invoice(self, number: str, amount: int, **kwargs) -> InvoiceLifecycle:
        lines = [Line(self.ids.make("il"), "Plan", amount, price_id="price_1Plan")]
        return InvoiceLifecycle(self.ids, self.who, NEW_API, T, lines, number=number, **kwargs)


@pytest.fixture
def drifted(stripe, fake, app):
    """A mirror that missed events: a payment, a whole invoice, a balance change."""
    book = Book("drift")
    delivered = [book.history.created(T - 100)]
    paid_late = book.invoice("D-1", 5000)  # the mirror saw it finalized; Stripe has it paid
    delivered.append(paid_late.finalized(T + 10))
    paid_late.paid(T + 20)
    in_sync = book.invoice("D-2", 3000)  # every event arrived
    delivered += [in_sync.finalized(T + 10), *in_sync.paid(T + 30)]
    never_seen = book.invoice("D-3", 1200)  # no event of it ever arrived
    never_seen.finalized(T + 40)
    failed = book.invoice("D-4", 800, collection_method="send_invoice")  # past due in the mirror
    delivered += [failed.finalized(T + 10), failed.payment_failed(T + 50)]
    deliver(stripe, delivered)
    run_worker(app)
    for life in (paid_late, in_sync, never_seen, failed):
        fake.put_invoice(last_object(life))
    # Dashboard credit used since, and 300 of EUR credit granted: no customer.updated reached us.
    customer = customer_object(book.who, T - 100, balance=-700)
    customer["invoice_credit_balance"] = {"usd": 700, "eur": 300}  # what expand[]= adds
    fake.put("customers", customer)
    return book, {"paid_late": paid_late, "in_sync": in_sync, "never_seen": never_seen, "failed": failed}


def mirrored(services, invoice_id: str) -> Invoice | None:
    with services.db.sessions() as session:
        return session.get(Invoice, invoice_id)


def credit_of(services, customer_id: str) -> int:
    with services.db.sessions() as session:
        return session.get(CustomerRow, customer_id).credit_balance


def scrape(client) -> dict:
    text = client.get("/metrics").get_data(as_text=True)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.pgbouncer  # every feature works through transaction pooling
def test_drift_is_reported_per_field_in_the_mirrors_terms_and_repaired_through_the_drains(
    app, services, client, env, fake, drifted
):
    book, lives = drifted
    paid_late, never_seen = lives["paid_late"], lives["never_seen"]
    assert mirrored(services, lives["failed"].id).status == "past_due"

    found = run(env, "--json")
    assert found.exit_code == 1, found.output
    report = report_of(found)
    assert report["checked"] == {"invoices": 4, "customers": 1}
    counts = {name: entry["count"] for name, entry in report["drift"].items()}
    # past_due against Stripe's open is no drift, and the invoice in sync has none
    assert counts == {"status": 1, "amount_paid": 1, "amount_remaining": 1, "credit_balance": 1, "missing": 1}
    assert report["drift"]["status"]["examples"] == [{"id": paid_late.id, "mirror": "open", "stripe": "paid"}]
    assert report["drift"]["amount_paid"]["examples"] == [{"id": paid_late.id, "mirror": 0, "stripe": 5000}]
    assert report["drift"]["missing"]["examples"] == [{"id": never_seen.id, "mirror": None, "stripe": "open"}]
    assert report["drift"]["credit_balance"]["examples"] == [  # one customer, two currencies
        {"id": book.who.id, "currency": "eur", "mirror": 0, "stripe": 300},
        {"id": book.who.id, "currency": "usd", "mirror": 2000, "stripe": 700},
    ]
    fetched = fake.requests_to(f"/v1/customers/{book.who.id}")
    assert [("expand[]", "invoice_credit_balance")] == fetched[-1].params
    assert not report["repair"] and report["repaired"] == 0
    assert mirrored(services, never_seen.id) is None  # a report changes nothing

    repaired = run(env, "--repair", "--json")
    assert repaired.exit_code == 1  # drift was found in this run too; the drain repairs it
    assert report_of(repaired)["repaired"] == 3  # two invoices and the customer
    with services.db.sessions() as session:
        recorded = session.scalars(sa.select(StripeEvent).where(StripeEvent.id.like("reconcile_%"))).all()
        assert sorted(e.type for e in recorded) == ["customer.updated", "invoice.updated", "invoice.updated"]
        assert {e.status for e in recorded} == {"queued"}
    run_worker(app)  # the real drain applies them like webhooks

    invoice = mirrored(services, paid_late.id)
    assert (invoice.status, invoice.amount_paid, invoice.amount_remaining) == ("paid", 5000, 0)
    assert mirrored(services, never_seen.id).status == "open"
    assert credit_of(services, book.who.id) == 700
    with services.db.sessions() as session:
        balances = session.scalars(
            sa.select(CustomerBalance).where(CustomerBalance.customer_id == book.who.id)
        ).all()
        assert {b.currency: b.credit_balance for b in balances} == {"eur": 300, "usd": 700}
        trail = session.scalars(
            sa.select(InvoiceStatusChange.to_status)
            .where(InvoiceStatusChange.invoice_id == paid_late.id)
            .order_by(InvoiceStatusChange.rank)
        ).all()
    assert trail == ["open", "paid"]

    again = run(env)
    assert again.exit_code == 0, again.output
    assert "No drift: the mirror agrees with Stripe." in again.stdout

    with services.db.sessions() as session:
        runs = session.scalars(sa.select(ReconcileRun).order_by(ReconcileRun.id)).all()
        actions = session.scalars(sa.select(OperatorAction).where(OperatorAction.action == "reconcile")).all()
    assert [(r.actor, r.drift, r.repaired, r.checked) for r in runs] == [
        ("cli:test-operator", counts, 0, 5),
        ("cli:test-operator", counts, 3, 5),
        ("cli:test-operator", {}, 0, 5),
    ]
    assert all(r.finished_at is not None for r in runs)
    assert [a.result["repaired"] for a in actions] == [0, 3, 0]
    assert actions[1].parameters["repair"] is True

    samples = scrape(client)
    assert samples[("stripe_webhook_reconcile_drift", (("field", "status"),))] == 0  # the last run's
    assert samples[("stripe_webhook_reconcile_repaired_total", ())] == 3  # it never goes down
    finished = samples[("stripe_webhook_reconcile_last_run_timestamp_seconds", ())]
    assert finished == pytest.approx(runs[-1].finished_at.timestamp())


def test_a_repair_never_undoes_a_newer_webhook(app, services, stripe, fake, env):
    book = Book("newer")
    life = book.invoice("N-1", 4000)
    life.finalized(T)
    fake.put_invoice(last_object(life))  # what reconcile fetches: open, 4,000 due
    fake.put("customers", customer_object(book.who, T - 100, balance=-2000))
    assert report_of(run(env, "--repair", "--json"))["drift"]["missing"]["count"] == 1
    # Before a drain takes the repair, a credit note lowers what is due; its webhook is newer.
    deliver(stripe, [life.credit_noted(int(time.time()) + 60, pre=1500)])
    run_worker(app)
    invoice = mirrored(services, life.id)
    assert (invoice.amount_due, invoice.pre_payment_credit_notes_amount) == (2500, 1500)
    with services.db.sessions() as session:
        logged = session.scalars(sa.select(StripeEvent).where(StripeEvent.object_id == life.id)).all()
    # both were applied, and the newer one won
    assert sorted((e.id.startswith("reconcile_"), e.status) for e in logged) == [
        (False, "processed"),
        (True, "processed"),
    ]


def test_a_mirror_ahead_of_stripe_is_reported_and_not_repaired(app, services, stripe, fake, env):
    """Paid here, open in Stripe's copy: no fetched copy can move a status back, so none is recorded."""
    book = Book("ahead")
    life = book.invoice("A-1", 4000)
    finalized = life.finalized(T)
    deliver(stripe, [book.history.created(T - 100), finalized, *life.paid(T + 30)])
    run_worker(app)
    fake.put_invoice(finalized["data"]["object"])  # Stripe's copy: still open
    fake.put("customers", customer_object(book.who, T - 100, balance=-2000))
    report = report_of(run(env, "--repair", "--json"))
    assert report["drift"]["status"]["examples"] == [{"id": life.id, "mirror": "paid", "stripe": "open"}]
    assert report["repaired"] == 0
    assert mirrored(services, life.id).status == "paid"


def test_the_table_names_fields_and_ids_never_customer_names_or_emails(env, drifted):
    book, lives = drifted
    result = run(env)
    assert result.exit_code == 1
    out = result.stdout
    assert "FIELD" in out and "COUNT" in out
    assert f"{lives['paid_late'].id}: open → paid" in out
    assert f"{book.who.id} usd: 2000 → 700" in out
    assert "--repair" in out
    for secret in (book.who.name, book.who.email, KEY):
        assert secret not in result.output
    assert book.who.email not in run(env, "--json").output


def test_metrics_show_the_last_runs_drift_by_field(app, client, env, drifted):
    assert ("stripe_webhook_reconcile_last_run_timestamp_seconds", ()) not in scrape(client)  # no run yet
    assert run(env).exit_code == 1
    samples = scrape(client)
    assert samples[("stripe_webhook_reconcile_drift", (("field", "missing"),))] == 1
    assert samples[("stripe_webhook_reconcile_drift", (("field", "credit_balance"),))] == 1
    assert samples[("stripe_webhook_reconcile_drift", (("field", "gone"),))] == 0
    assert samples[("stripe_webhook_reconcile_repaired_total", ())] == 0
    whole_run_at = samples[("stripe_webhook_reconcile_last_run_timestamp_seconds", ())]
    # A narrower check that finds nothing (a customer with no invoices) clears nothing.
    assert run(env, "--customer", "cus_1NobodyAtAll000000000").exit_code == 0
    after = scrape(client)
    assert after[("stripe_webhook_reconcile_drift", (("field", "missing"),))] == 1
    assert after[("stripe_webhook_reconcile_last_run_timestamp_seconds", ())] == whole_run_at


def test_a_gone_draft_is_repaired_as_deleted_and_another_gone_invoice_only_reported(
    app, services, stripe, fake, env
):
    book = Book("gone")
    draft = book.invoice("G-1", 900)
    issued = book.invoice("G-2", 700)  # finalized here; Stripe has no such invoice (test data deleted)
    deliver(stripe, [book.history.created(T - 100), draft.created(T), issued.finalized(T + 5)])
    run_worker(app)  # the draft's invoice.deleted never came
    fake.put("customers", customer_object(book.who, T - 100, balance=-2000))

    result = run(env, "--repair", "--json")
    assert result.exit_code == 1
    report = report_of(result)
    assert report["drift"]["gone"]["count"] == 2
    assert sorted(report["drift"]["gone"]["examples"], key=lambda e: e["mirror"]) == [
        {"id": draft.id, "mirror": "draft", "stripe": None},
        {"id": issued.id, "mirror": "open", "stripe": None},
    ]
    assert report["repaired"] == 1  # the draft: deleted, as only drafts can be
    assert f"/v1/invoices/{draft.id}" in fake.paths()  # asked for it by id before calling it gone
    run_worker(app)
    assert mirrored(services, draft.id).deleted_at is not None
    assert mirrored(services, issued.id).deleted_at is None and mirrored(services, issued.id).status == "open"
    rerun = report_of(run(env, "--json"))["drift"]
    assert rerun == {"gone": {"count": 1, "examples": [{"id": issued.id, "mirror": "open", "stripe": None}]}}


def test_the_window_customer_account_and_limit_scope_both_sides(app, services, stripe, fake, env, drifted):
    book, lives = drifted
    other = Book("other")
    stranger = other.invoice("O-1", 400)
    deliver(stripe, [stranger.finalized(T + 5)])
    run_worker(app)
    fake.put_invoice(last_object(stranger))
    fake.put("customers", customer_object(other.who, T - 100, balance=0))

    mine = report_of(run(env, "--customer", other.who.id, "--json"))
    assert mine["checked"] == {"invoices": 1, "customers": 1} and mine["drift"] == {}
    listing = [r for r in fake.state.requests if r.path == "/v1/invoices"]
    assert ("customer", other.who.id) in listing[-1].params

    later = report_of(run(env, "--since", datetime.fromtimestamp(T + 1, UTC).isoformat(), "--json"))
    assert later["checked"]["invoices"] == 0  # every invoice was created at T

    connected = run(env, "--account", "acct_1Connected", "--json")
    assert connected.exit_code == 0  # the platform's mirrored invoices are not that account's
    assert report_of(connected)["checked"]["invoices"] == 0
    assert fake.state.requests[-1].headers.get("Stripe-Account") == "acct_1Connected"

    one = report_of(run(env, "--limit", "1", "--json"))
    assert one["checked"]["invoices"] == 1 and "gone" not in one["drift"]


def test_a_copy_our_reading_refuses_is_unreadable_by_path_and_not_recorded(app, services, fake, env):
    book = Book("unreadable")
    broken = book.invoice("U-1", 1000)
    broken.finalized(T)
    obj = last_object(broken)
    obj["total"] = "1000"
    fake.put_invoice(obj)
    fake.put("customers", customer_object(book.who, T - 100))

    result = run(env, "--repair", "--json")
    assert result.exit_code == 1
    report = report_of(result)
    assert report["drift"]["unreadable"]["examples"] == [{"id": broken.id, "field": "data.object.total"}]
    assert report["repaired"] == 0  # never the unreadable invoice (nor its unmirrored customer)
    with services.db.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(StripeEvent).where(
            StripeEvent.object_id == broken.id)) == 0  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--customer", "bob"), "expected a Stripe id like cus_123, got 'bob'"),
        (("--account", "acct-1"), "expected a Stripe id like acct_123"),
        (("--since", "soon"), "expected a date like 2026-11-01"),
        (("--since", "2999-01-01"), "is in the future"),
        (("--limit", "0"), "0 is not in the range x>=1"),
    ],
)
def test_bad_input_is_a_clear_usage_error(env, args, message):
    result = run(env, *args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_without_a_key_it_says_what_is_missing(env):
    result = run(env, STRIPE_API_KEY="")
    assert result.exit_code == 2
    assert "STRIPE_API_KEY is not set" in result.stderr


def test_stripe_refusing_the_key_stops_the_run_clearly_and_leaves_it_unfinished(services, env):
    result = run(env, STRIPE_API_KEY="sk_test_notOurs7Qz")
    assert result.exit_code == 2
    assert "Stripe refused STRIPE_API_KEY (HTTP 401)" in result.stderr
    assert "7Qz" not in result.output and "****" not in result.output  # Stripe's message echoes the key
    with services.db.sessions() as session:
        run_row = session.scalars(sa.select(ReconcileRun)).one()
        action = session.scalars(sa.select(OperatorAction)).one()
    assert run_row.finished_at is None
    assert action.action == "reconcile" and action.result["error"] == "StripeUnavailable"


# ---- the daily run ---------------------------------------------------------------------------


def test_the_daily_schedule_is_read_once_and_off_by_default():
    assert load_config({}).reconcile_time_utc is None
    config = load_config({"RECONCILE_TIME": "04:15", "RECONCILE_REPAIR": "true", "RECONCILE_DAYS": "14"})
    assert (config.reconcile_time_utc, config.reconcile_repair, config.reconcile_days) == ("04:15", True, 14)
    assert load_config({"RECONCILE_REPAIR": "false"}).reconcile_repair is False
    for bad, name in (({"RECONCILE_TIME": "4:15"}, "RECONCILE_TIME"), ({"RECONCILE_REPAIR": "sometimes"},
                      "RECONCILE_REPAIR"), ({"RECONCILE_DAYS": "0"}, "RECONCILE_DAYS")):  # fmt: skip
        with pytest.raises(ConfigError, match=name):
            load_config(bad)
    no_key = load_config({"RECONCILE_TIME": "04:15", "REDIS_URL": "redis://127.0.0.1:1/0"})
    for role in ("scheduler", "worker"):
        with pytest.raises(ConfigError, match="RECONCILE_TIME is set but STRIPE_API_KEY is not"):
            check_role(no_key, role)
    check_role(no_key.with_overrides(stripe_api_key=KEY), "scheduler")


@pytest.mark.parametrize(("accept", "key"), [("live", KEY), ("test", "sk_live_fake")])
def test_a_key_of_the_mode_accept_mode_ignores_is_refused_before_anything_runs(services, env, accept, key):
    """Every repair would be recorded as ignored, and the drift reported forever."""
    result = run(env, "--repair", STRIPE_ACCEPT_MODE=accept, STRIPE_API_KEY=key)
    assert result.exit_code == 2
    assert f"STRIPE_ACCEPT_MODE={accept} but STRIPE_API_KEY is a" in result.stderr
    assert key not in result.output
    with services.db.sessions() as session:
        assert session.scalars(sa.select(ReconcileRun)).all() == []
    daily = load_config({"RECONCILE_TIME": "04:15", "REDIS_URL": "redis://127.0.0.1:1/0",
                         "STRIPE_API_KEY": key, "STRIPE_ACCEPT_MODE": accept})  # fmt: skip
    for role in ("scheduler", "worker"):
        with pytest.raises(ConfigError, match=f"RECONCILE_TIME is set, but STRIPE_ACCEPT_MODE={accept}"):
            check_role(daily, role)


def test_the_scheduler_leader_runs_it_daily_and_a_worker_repairs(app, services, drifted):
    book, lives = drifted
    config = services.config.with_overrides(
        reconcile_time_utc="04:15", reconcile_repair=True, reconcile_days=30
    )
    history = get_cron_job_history_key("jobs.reconcile.reconcile_mirror")
    connection = services.queue.connection
    start = datetime.now(UTC).replace(hour=4, minute=14, second=50, microsecond=0) + timedelta(days=1)
    with time_machine.travel(start, tick=False) as traveller:
        leader = AppCronScheduler(services.db, connection=connection, queue_name=config.queue_name)
        standby = AppCronScheduler(services.db, connection=connection, queue_name=config.queue_name)
        said = [reconcile_jobs.schedule(cron, config) for cron in (leader, standby)]
        assert said[0] == "reconcile of the last 30 days daily at 04:15 UTC (repairing)"
        for _ in range(30):
            leader.tick()
            standby.tick()
            traveller.shift(timedelta(seconds=1))
        assert connection.zcard(history) == 1  # once, by the leader
    assert reconcile_jobs.schedule(leader, services.config) is None  # RECONCILE_TIME unset: not scheduled

    # The worker was started without RECONCILE_REPAIR: the job carries the scheduler's settings.
    assert not services.config.reconcile_repair
    run_worker(app)  # the reconcile job, then the drain it woke
    with services.db.sessions() as session:
        scheduled = session.scalars(sa.select(ReconcileRun)).one()
    assert scheduled.actor == "scheduler" and scheduled.repaired == 3
    since = datetime.fromisoformat(scheduled.scope["since"])
    assert abs((datetime.now(UTC) - since) - timedelta(days=30)) < timedelta(minutes=5)
    assert mirrored(services, lives["never_seen"].id).status == "open"
    assert credit_of(services, book.who.id) == 700


def test_a_customer_whose_balance_stripe_leaves_null_states_no_credit_and_breaks_nothing(env, drifted, fake):
    """The SDK's schema lets `balance` be null from 2023-10-16 on: nothing stated, nothing compared."""
    book, _ = drifted
    customer = customer_object(book.who, T - 100, balance=None)
    fake.put("customers", customer)
    result = run(env, "--json")
    assert result.exit_code == 1, result.output  # the invoices still drift; the run finished
    assert "credit_balance" not in report_of(result)["drift"]


def test_credit_in_a_currency_stripes_map_leaves_out_is_drift_and_repaired_to_zero(
    app, env, fake, drifted, services
):
    """An expanded `invoice_credit_balance` lists every currency the customer has a balance in: a
    currency it leaves out holds none, so credit the mirror still shows there has drifted."""
    book, _ = drifted
    run(env, "--repair")
    run_worker(app)  # the mirror now holds Stripe's 300 of EUR credit
    customer = customer_object(book.who, T - 100, balance=-700)
    customer["invoice_credit_balance"] = {"usd": 700}  # the EUR credit was used or removed since
    fake.put("customers", customer)

    found = report_of(run(env, "--json"))
    assert found["drift"]["credit_balance"]["examples"] == [
        {"id": book.who.id, "currency": "eur", "mirror": 300, "stripe": 0}
    ]
    # A later second: two fetches of one second with different content tie (docs/design.md §4).
    with time_machine.travel(time.time() + 2):
        run(env, "--repair")
    run_worker(app)
    with services.db.sessions() as session:
        balances = session.scalars(
            sa.select(CustomerBalance).where(CustomerBalance.customer_id == book.who.id)
        ).all()
        assert {b.currency: b.credit_balance for b in balances} == {"eur": 0, "usd": 700}
    assert "credit_balance" not in report_of(run(env, "--json"))["drift"]


def test_two_repairs_in_one_second_each_record_their_copies(services, env, drifted):
    """A second repair right after the first (an operator's retry) is not taken for a duplicate."""
    with time_machine.travel(time.time(), tick=False):
        counts = [report_of(run(env, "--repair", "--json"))["repaired"] for _ in range(2)]
    assert counts == [3, 3]
    with services.db.sessions() as session:
        logged = session.scalars(sa.select(StripeEvent.id).where(StripeEvent.id.like("reconcile_%"))).all()
    assert len(set(logged)) == 6


def test_a_past_due_invoice_whose_amounts_drifted_is_repaired(app, services, stripe, fake, env):
    """past_due is the mirror's refinement of open, not a status ahead of Stripe's."""
    book = Book("pastdue")
    life = book.invoice("P-1", 4000, collection_method="send_invoice")
    deliver(stripe, [book.history.created(T - 100), life.finalized(T), life.payment_failed(T + 10)])
    run_worker(app)
    assert mirrored(services, life.id).status == "past_due"
    copy = {**last_object(life), "amount_paid": 1000, "amount_remaining": 3000}
    fake.put_invoice(copy)
    fake.put("customers", customer_object(book.who, T - 100, balance=-2000))
    report = report_of(run(env, "--repair", "--json"))
    assert "amount_paid" in report["drift"] and report["repaired"] == 1
    run_worker(app)
    assert mirrored(services, life.id).amount_paid == 1000

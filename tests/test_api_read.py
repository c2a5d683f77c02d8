"""The read API beyond the basics: one event, the customer list, unknown parameters, error text."""

import json
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from builder import Customer

from tests.handlers.test_currencies import eur_credit_story
from tests.handlers.test_invoices import apply
from tests.handlers.test_scopes import ACCOUNT_A, ACCOUNT_B, story
from tests.helpers import deliver_payment_before_its_invoice, invoke_cli, like_query_plans, run_worker
from webhook_service.core.models import StripeEvent
from webhook_service.processing.sweep import sweep_past_due
from webhook_service.web.services import get_services

KEY = "portal-key-read-0123456789"
SECRET_EMAIL = "jane.doe@customer.example"
#: What an older row holds: SQLAlchemy's full text, statement and bound parameters included.
STORED_ERROR = (
    'IntegrityError: (psycopg.errors.NotNullViolation) null value in column "number" violates '
    "not-null constraint\nDETAIL: Failing row contains (in_1, jane.doe@customer.example).\n"
    "[SQL: UPDATE customers SET email=%(email)s WHERE customers.id = %(id)s]\n"
    f"[parameters: {{'email': '{SECRET_EMAIL}', 'id': 'cus_1'}}]\n"
    "(Background on this error at: https://sqlalche.me/e/20/gkpj)"
)
FIRST_LINE = (
    'IntegrityError: (psycopg.errors.NotNullViolation) null value in column "number" violates '
    "not-null constraint"
)


@pytest.fixture
def config_overrides():
    return {"portal_api_keys": (KEY,)}


def get(client, path, **params):
    return client.get(f"/api/v1{path}", headers={"Authorization": f"Bearer {KEY}"}, query_string=params)


def _failed_event(app, fixture_events) -> dict:
    event = next(e for e in fixture_events if e["type"] == "invoice.created")
    with get_services(app).db.sessions() as session, session.begin():
        session.add(
            StripeEvent(
                id=event["id"], type=event["type"], livemode=False, object_id=event["data"]["object"]["id"],
                received_at=sa.func.now(), status="failed", attempts=3, last_error=STORED_ERROR,
                payload=json.dumps(event),
            )
        )  # fmt: skip
    return event


def test_last_error_is_its_first_line_without_sql_or_values(app, client, fixture_events):
    event = _failed_event(app, fixture_events)
    listed = get(client, "/events", status="failed").get_json()["items"]
    assert [item["last_error"] for item in listed] == [FIRST_LINE]
    one = get(client, f"/events/{event['id']}")
    assert one.status_code == 200 and one.get_json()["last_error"] == FIRST_LINE
    assert SECRET_EMAIL not in one.get_data(as_text=True) and "[SQL" not in one.get_data(as_text=True)


def test_cli_shows_the_same_first_line(app, fixture_events, database_url, redis_url):
    event = _failed_event(app, fixture_events)
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url}
    listed = invoke_cli("events", "list", "--status", "failed", env=env)
    shown = invoke_cli("events", "show", event["id"], env=env)
    assert listed.exit_code == 0 and shown.exit_code == 0, listed.stderr + shown.stderr
    header = shown.stdout.split("payload:")[0]
    assert json.loads(header)["last_error"] == FIRST_LINE
    for output in (listed.stdout, header):
        assert SECRET_EMAIL not in output and "[SQL" not in output and "[parameters" not in output


@pytest.fixture
def mirrored(app, stripe, services, fixture_events):
    for event in fixture_events:
        assert stripe.post(event).status_code == 200
    run_worker(app)
    return app


@pytest.mark.parametrize(
    "path, params",
    [
        ("/invoices", {"livemod": "true"}),
        ("/invoices", {"status": "paid", "sort": "total"}),
        ("/customers", {"name": "Acme"}),
        ("/notifications", {"kind": "x"}),
        ("/events", {"object": "in_1"}),
        ("/invoices/in_nope", {"expand": "lines"}),
        ("/customers/cus_nope", {"x": "1"}),
        ("/events/evt_nope", {"payload": "1"}),
    ],
)
def test_an_unknown_query_parameter_is_a_400_naming_it(client, path, params):
    response = get(client, path, **params)
    body = response.get_json()
    assert response.status_code == 400 and body["error"] == "bad_request", body
    unknown = next(name for name in params if name not in ("status",))
    assert f"{unknown}: Unknown field" in body["message"]


def test_one_event_and_unknown_ids(client, mirrored, fixture_events):
    event = fixture_events[0]
    body = get(client, f"/events/{event['id']}").get_json()
    assert (body["id"], body["type"], body["status"]) == (event["id"], event["type"], "processed")
    assert "payload" not in body and body["last_error"] is None and "next_attempt_at" in body
    missing = get(client, "/events/evt_nope")
    assert missing.status_code == 404 and missing.get_json() == {
        "error": "not_found",
        "message": "No event 'evt_nope'.",
    }


def test_customer_list_filters_and_pages(client, mirrored):
    body = get(client, "/customers").get_json()
    names = {item["name"] for item in body["items"]}
    assert body["total"] == len(body["items"]) == 5 and "Acme Robotics" in names
    assert "ledger" not in body["items"][0] and "credit_balance" in body["items"][0]
    assert [i["name"] for i in get(client, "/customers", entity="org_acme").get_json()["items"]] == [
        "Acme Robotics"
    ]
    assert [i["name"] for i in get(client, "/customers", q="acme").get_json()["items"]] == ["Acme Robotics"]
    assert [i["id"] for i in get(client, "/customers", q="AP@GLOBEX").get_json()["items"]] == [
        "cus_1GlobexCorporation0000"
    ]
    assert get(client, "/customers", q="%").get_json()["total"] == 0  # no wildcard injection
    pages = [get(client, "/customers", per_page=4, page=p).get_json() for p in (1, 2)]
    assert [len(p["items"]) for p in pages] == [4, 1]
    assert len({i["id"] for p in pages for i in p["items"]}) == 5


def test_lists_filter_on_mode_and_account_and_every_object_says_which(client, services):
    alpha = Customer("cus_1AlphaBuyer000000000", "Ann", "ann@a.example")
    beta = Customer("cus_1BetaBuyer0000000000", "Bob", "bob@b.example")
    platform = Customer("cus_1PlatformBuyer000000", "Pat", "pat@p.example")
    apply(services, story("alpha", alpha, ACCOUNT_A, livemode=True)[0] + story("beta", beta, ACCOUNT_B)[0]
          + story("plat", platform, None, livemode=True)[0])  # fmt: skip
    sweep_past_due(services.db, now=datetime.fromtimestamp(1_793_000_000 + 30 * 86400, UTC))

    def ids(path, **params):
        return sorted(
            item.get("customer_id") or item["id"] for item in get(client, path, **params).get_json()["items"]
        )

    for path in ("/invoices", "/customers", "/notifications"):
        assert ids(path, account=ACCOUNT_A) in ([alpha.id], [alpha.id, alpha.id])
        assert ids(path, account="platform") in ([platform.id], [platform.id, platform.id])
        assert set(ids(path, livemode="true")) == {alpha.id, platform.id}
        assert set(ids(path, livemode="false", account=ACCOUNT_B)) == {beta.id}
        assert ids(path, livemode="false", account=ACCOUNT_A) == []
    invoice = get(client, "/invoices", account=ACCOUNT_A).get_json()["items"][0]
    detail = get(client, f"/invoices/{invoice['id']}").get_json()
    assert (detail["livemode"], detail["account"]) == (True, ACCOUNT_A)
    assert {(x["livemode"], x["account"]) for x in detail["lines"] + detail["credit_notes"]} == {
        (True, ACCOUNT_A)
    }
    customer = get(client, f"/customers/{beta.id}").get_json()
    assert (customer["livemode"], customer["account"], customer["credit_balances"]) == (
        False,
        ACCOUNT_B,
        {"usd": 500},
    )
    assert {(x["livemode"], x["account"]) for x in customer["ledger"]} == {(False, ACCOUNT_B)}
    assert all(
        n["account"] == ACCOUNT_A
        for n in get(client, "/notifications", account=ACCOUNT_A).get_json()["items"]
    )


def test_credit_balances_per_currency(client, services):
    apply(services, eur_credit_story())
    body = get(client, "/customers/cus_1FrankFreight0000000000").get_json()
    assert (body["credit_balance"], body["currency"], body["credit_balances"]) == (
        1000,
        "usd",
        {"usd": 1000, "eur": 2000},
    )
    listed = get(client, "/customers", q="frank").get_json()["items"]
    assert [c["credit_balances"] for c in listed] == [{"usd": 1000, "eur": 2000}]


@pytest.mark.postgresql_only
@pytest.mark.parametrize(
    ("path", "params", "index"),
    [
        ("/invoices", {"q": "ACME-0"}, "ix_invoices_number_prefix"),
        ("/customers", {"q": "Acme_%"}, "ix_customers_name_prefix"),
    ],
)
def test_prefix_searches_are_answered_from_their_index(client, services, path, params, index):
    # A prefix search must not scan every row: each LIKE query the endpoint runs plans an index
    # condition on the prefix index (sequential scans disfavoured, as on a big table).
    plans = like_query_plans(services.db.engine, lambda: get(client, path, **params))
    assert plans and all(index in plan and "Index Cond" in plan for plan in plans), plans


def test_a_payment_before_its_invoice_lists_no_placeholder_invoice(app, client, stripe):
    """invoice_payment.paid may come first (or alone): the row it leaves is no invoice to list."""
    invoice_id = deliver_payment_before_its_invoice(app, stripe)
    listed = get(client, "/invoices").get_json()
    assert invoice_id not in [row["id"] for row in listed["items"]]
    assert get(client, f"/invoices/{invoice_id}").status_code == 404

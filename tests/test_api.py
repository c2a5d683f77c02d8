"""The portal read API (/api/v1) on each database, over the fixtures mirrored by a real worker."""

import pytest
import sqlalchemy as sa
from openapi_spec_validator import validate as validate_openapi

from tests.helpers import run_worker
from webhook_service.processing.sweep import sweep_past_due

KEY, OTHER_KEY = "portal-key-one-0123456789", "portal-key-two-9876543210"
ACME = "cus_1AcmeRobotics000000000"
INVOICE_KEYS = {
    "id", "number", "customer_id", "status", "currency", "subtotal", "tax", "total", "amount_due",
    "amount_paid", "amount_remaining", "credit_applied", "issued_at", "due_date", "paid_at", "voided_at",
    "period_start", "period_end", "hosted_invoice_url", "invoice_pdf", "livemode",
}  # fmt: skip


@pytest.fixture
def config_overrides():
    return {"portal_api_keys": (KEY, OTHER_KEY)}


@pytest.fixture
def mirrored(app, stripe, services, fixture_events):
    for event in fixture_events:
        assert stripe.post(event).status_code == 200
    run_worker(app)
    sweep_past_due(services.db)
    return app


def get(client, path, key=KEY, **params):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.get(f"/api/v1{path}", headers=headers, query_string=params)


def numbers(response):
    return [item["number"] for item in response.get_json()["items"]]


# ---- auth and errors ----------------------------------------------------------------------


def test_requests_without_a_valid_key_get_401(client, mirrored):
    for response in (get(client, "/invoices", key=None), get(client, "/invoices", key="nope"),
                     client.get("/api/v1/invoices", headers={"Authorization": f"Basic {KEY}"})):  # fmt: skip
        assert response.status_code == 401 and response.get_json()["error"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert get(client, "/invoices", key=OTHER_KEY).status_code == 200


@pytest.mark.parametrize("config_overrides", [{"portal_api_keys": ()}])
def test_without_configured_keys_the_api_is_closed(client):
    response = get(client, "/invoices")
    assert response.status_code == 401 and "PORTAL_API_KEYS" in response.get_json()["message"]


@pytest.mark.parametrize(
    "path, params, field",
    [
        ("/invoices", {"status": "late"}, "status"),
        ("/invoices", {"page": "0"}, "page"),
        ("/invoices", {"per_page": "1000"}, "per_page"),
        ("/invoices", {"issued_from": "last tuesday"}, "issued_from"),
        ("/invoices", {"issued_from": "2026-11-02", "issued_to": "2026-11-01"}, "issued_from"),
        ("/notifications", {"audience": "everyone"}, "audience"),
        ("/events", {"status": "done"}, "status"),
        ("/events", {"since": "yesterday"}, "since"),
    ],
)
def test_bad_filters_get_400_naming_the_parameter(client, path, params, field):
    response = get(client, path, **params)
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "bad_request" and f"{field}:" in body["message"]


def test_unknown_ids_get_404(client):
    assert get(client, "/invoices/in_nope").status_code == 404
    assert get(client, "/customers/cus_nope").get_json()["error"] == "not_found"


# ---- invoices -----------------------------------------------------------------------------


def test_invoice_list_is_newest_first_with_the_contract_keys(client, mirrored):
    body = get(client, "/invoices").get_json()
    assert body["total"] == 7 and body["page"] == 1 and body["per_page"] == 50
    created = [item["created_at"] for item in body["items"]]
    assert created == sorted(created, reverse=True)
    assert INVOICE_KEYS <= set(body["items"][0])
    acme = next(item for item in body["items"] if item["number"] == "ACME-0001")
    assert acme["paid_at"].endswith("+00:00") and isinstance(acme["total"], int) and acme["currency"] == "usd"


def test_invoice_filters_and_pagination(client, mirrored):
    assert sorted(numbers(get(client, "/invoices", status="paid"))) == ["ACME-0001", "ACME-0013"]
    assert sorted(numbers(get(client, "/invoices", status="past_due"))) == ["HOOLI-0001", "UMBRELLA-0001"]
    assert sorted(numbers(get(client, "/invoices", customer=ACME))) == ["ACME-0001", "ACME-0013"]
    assert sorted(numbers(get(client, "/invoices", entity="org_acme"))) == ["ACME-0001", "ACME-0013"]
    assert numbers(get(client, "/invoices", entity="org_unknown")) == []
    assert numbers(get(client, "/invoices", q="ACME-001")) == ["ACME-0013"]
    assert numbers(get(client, "/invoices", q="%")) == []  # no wildcard injection
    in_2024 = get(client, "/invoices", issued_from="2024-01-01", issued_to="2025-01-01")
    assert sorted(numbers(in_2024)) == ["ACME-0001", "GLOBEX-0001", "UMBRELLA-0001"]
    pages = [get(client, "/invoices", per_page=3, page=p).get_json() for p in (1, 2, 3, 4)]
    assert [len(p["items"]) for p in pages] == [3, 3, 1, 0] and {p["total"] for p in pages} == {7}
    everything = [n for p in pages for n in (item["number"] for item in p["items"])]
    assert len(set(everything)) == 7


def test_invoice_detail_has_lines_history_credit_notes_and_credit(client, mirrored):
    listed = get(client, "/invoices", q="ACME-0013").get_json()["items"][0]
    detail = get(client, f"/invoices/{listed['id']}").get_json()
    assert [line["category"] for line in detail["lines"]] == ["fixed_fee", "usage"]
    history = [(h["from_status"], h["to_status"]) for h in detail["status_history"]]
    assert history == [(None, "draft"), ("draft", "open"), ("open", "past_due"), ("past_due", "paid")]
    assert all(
        h["event_id"].startswith("evt_") and h["at"].endswith("+00:00") for h in detail["status_history"]
    )
    assert detail["credit_applied"] == 1450 and detail["post_payment_credit_notes_amount"] == 2000
    notes = {note["number"]: note for note in detail["credit_notes"]}
    assert (
        notes["ACME-0013-CN-01"]["credited_to_balance"] == 1000
        and notes["ACME-0013-CN-01"]["refunded_amount"] == 1000
    )
    assert notes["ACME-0013-CN-02"]["status"] == "void"
    partial = get(
        client, f"/invoices/{get(client, '/invoices', q='INITECH').get_json()['items'][0]['id']}"
    ).get_json()
    assert partial["credited_in_full"] is False and partial["amount_remaining"] == 430000


def test_customer_detail_has_entity_credit_balance_and_ledger(client, mirrored):
    body = get(client, f"/customers/{ACME}").get_json()
    assert (body["name"], body["entity_type"], body["entity_id"], body["entity_name"]) == (
        "Acme Robotics", "company", "org_acme", "Acme Robotics",
    )  # fmt: skip
    assert body["credit_balance"] == 1000 and body["currency"] == "usd"
    assert sum(entry["amount"] for entry in body["ledger"]) == body["credit_balance"]
    assert {entry["kind"] for entry in body["ledger"]} == {
        "credit_note",
        "applied_to_invoice",
        "credit_note_voided",
    }


def test_notifications_and_filters(client, mirrored):
    body = get(client, "/notifications").get_json()
    assert body["total"] == 6
    assert {"id", "kind", "audience", "invoice_id", "customer_id", "created_at"} <= set(body["items"][0])
    assert get(client, "/notifications", audience="admins").get_json()["total"] == 3
    invoice_id = body["items"][0]["invoice_id"]
    assert {
        n["invoice_id"] for n in get(client, "/notifications", invoice=invoice_id).get_json()["items"]
    } == {invoice_id}
    assert get(client, "/notifications", customer=ACME).get_json()["total"] == 2


def test_event_log_for_operators(client, mirrored, fixture_events):
    body = get(client, "/events", per_page=200).get_json()
    assert body["total"] == len({e["id"] for e in fixture_events})
    assert "payload" not in body["items"][0]
    assert get(client, "/events", status="ignored").get_json()["total"] == 2
    assert get(client, "/events", type="credit_note.voided").get_json()["total"] == 1
    assert get(client, "/events", since="2099-01-01").get_json()["total"] == 0


# ---- the document and the queries ---------------------------------------------------------


def test_openapi_document_is_valid_openapi_3(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    validate_openapi(document)
    assert document["openapi"].startswith("3.")
    assert {"/api/v1/invoices", "/api/v1/invoices/{invoice_id}", "/api/v1/customers/{customer_id}",
            "/api/v1/notifications", "/api/v1/events"} <= set(document["paths"])  # fmt: skip
    invoice = document["components"]["schemas"]["Invoice"]["properties"]
    assert INVOICE_KEYS <= set(invoice)


LIST_QUERIES = [
    ("SELECT id FROM invoices WHERE deleted_at IS NULL ORDER BY created_at DESC, id DESC LIMIT 50",
     "ix_invoices_created"),
    ("SELECT id FROM invoices WHERE customer_id = 'cus_x' ORDER BY created_at DESC LIMIT 50",
     "ix_invoices_customer_created"),
    ("SELECT id FROM invoices WHERE status = 'open' ORDER BY created_at DESC LIMIT 50",
     "ix_invoices_status_due"),
    ("SELECT id FROM invoices WHERE number LIKE 'ACME%' LIMIT 50", "ix_invoices_number_prefix"),
    ("SELECT id FROM invoices WHERE issued_at >= now() - interval '1 day' LIMIT 50", "ix_invoices_issued_at"),
    ("SELECT id FROM notifications WHERE audience = 'admins' ORDER BY created_at DESC LIMIT 50",
     "ix_notifications_audience_created"),
    ("SELECT id FROM stripe_events ORDER BY received_at DESC LIMIT 50", "ix_stripe_events_received"),
    ("SELECT id FROM customers ORDER BY created_at DESC, id DESC LIMIT 50", "ix_customers_created"),
    ("SELECT id FROM customers WHERE lower(name) LIKE 'acme%' LIMIT 50", "ix_customers_name_prefix"),
    ("SELECT id FROM customers WHERE lower(email) LIKE 'ap@%' LIMIT 50", "ix_customers_email_prefix"),
    ("SELECT id FROM invoices WHERE account = 'acct_1' AND livemode ORDER BY created_at DESC LIMIT 50",
     "ix_invoices_account_created"),
    ("SELECT id FROM notifications WHERE account IS NULL AND NOT livemode ORDER BY created_at DESC LIMIT 50",
     "ix_notifications_account_created"),
    ("SELECT id FROM stripe_events WHERE type = 'invoice.paid' ORDER BY received_at DESC LIMIT 50",
     "ix_stripe_events_type_received"),
]  # fmt: skip


@pytest.mark.parametrize("query, index", LIST_QUERIES)
def test_list_queries_use_indexes_on_postgresql(postgresql_database_url, query, index):
    """PostgreSQL's plan for each list query (seq scans off: the test tables are tiny)."""
    engine = sa.create_engine(postgresql_database_url)
    with engine.connect() as conn:
        # Planned on empty, never analyzed tables (a new deployment's), whatever earlier tests left
        # (they are emptied with DELETE: dead rows change the estimates); rolled back on exit.
        conn.execute(sa.text(f"TRUNCATE {query.split(' FROM ')[1].split()[0]} CASCADE"))
        conn.execute(sa.text("SET enable_seqscan = off"))
        plan = "\n".join(row[0] for row in conn.execute(sa.text(f"EXPLAIN {query}")))
    engine.dispose()
    assert index in plan, plan

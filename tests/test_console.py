"""The operator console (/console) through Flask's test client, on each database.

Security first (login, rate limit, session cookie, CSRF, headers, no page without login), then
the pages over the fixtures mirrored by a real worker, then the actions and their audit rows.
tests/test_console_browser.py drives the same pages in a real browser.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from tests.helpers import deliver_payment_before_its_invoice, like_query_plans, run_worker
from webhook_service.core.config import Config, OperatorKey, load_config, parse_operator_keys
from webhook_service.core.errors import ConfigError
from webhook_service.core.models import CustomerBalance, OperatorAction, StripeEvent
from webhook_service.processing import pause
from webhook_service.processing.sweep import sweep_past_due
from webhook_service.web.console import auth
from webhook_service.web.console.forms import PAGE_SIZE
from webhook_service.web.services import get_services

ALICE_KEY = "alice-key-0123456789abcdef"
BOB_KEY = "bob-key-fedcba9876543210"
OPERATORS = (OperatorKey("alice", ALICE_KEY), OperatorKey("bob", BOB_KEY))
ACME_0001 = "in_1Jxuw3WLVK9m6ta9dGMeh1YW"
ACME = "cus_1AcmeRobotics000000000"
_CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def config_overrides():
    return {"operator_keys": OPERATORS}


@pytest.fixture
def mirrored(app, stripe, services, fixture_events):
    for event in fixture_events:
        assert stripe.post(event).status_code == 200
    run_worker(app)
    sweep_past_due(services.db)
    return app


def csrf_of(response) -> str:
    return _CSRF_RE.search(response.get_data(as_text=True))[1]


def login(client, key=ALICE_KEY, base_url="http://localhost", **extra):
    token = csrf_of(client.get("/console/login", base_url=base_url))
    return client.post("/console/login", data={"key": key, "csrf_token": token, **extra}, base_url=base_url)


@pytest.fixture
def console(client):
    """A client logged in as alice."""
    assert login(client).status_code == 302
    return client


def post(client, path, **data):
    """POST a console form the way the browser does: with the CSRF token of the current page."""
    token = csrf_of(client.get("/console/events"))
    return client.post(path, data={"csrf_token": token, **data})


def text(response) -> str:
    return response.get_data(as_text=True)


def table(response) -> str:
    """The rows of a list page (not its filter form, whose hints name types and numbers)."""
    page = text(response)
    return page[page.index("<tbody>") :] if "<tbody>" in page else ""


# ---- configuration ------------------------------------------------------------------------


def test_operator_keys_name_each_operator_and_refuse_weak_entries():
    assert parse_operator_keys(f"alice:{ALICE_KEY}, bob:{BOB_KEY}") == OPERATORS
    (bare,) = parse_operator_keys(ALICE_KEY)
    assert bare.name.startswith("operator-") and bare.key == ALICE_KEY and ALICE_KEY not in bare.name
    refused = {
        "alice:short": "shorter than 16",
        f"al ice:{ALICE_KEY}": "name before ':'",
        f"alice:{ALICE_KEY},alice:{BOB_KEY}": "twice",
        f"a:{ALICE_KEY},b:{ALICE_KEY}": "same key",
    }
    for raw, says in refused.items():
        with pytest.raises(ConfigError, match=says):
            parse_operator_keys(raw)
    assert ALICE_KEY not in repr(load_config({"OPERATOR_KEYS": f"alice:{ALICE_KEY}"}))


def test_session_key_is_required_long_or_derived_from_the_operator_keys():
    assert Config().console_session_key is None  # no keys: the console is closed, no session key
    derived = Config(operator_keys=OPERATORS).console_session_key
    assert derived == Config(operator_keys=OPERATORS[::-1]).console_session_key  # same on every process
    assert derived != Config(operator_keys=OPERATORS[:1]).console_session_key  # a key change ends sessions
    with pytest.raises(ConfigError, match="CONSOLE_SECRET_KEY"):
        load_config({"OPERATOR_KEYS": f"alice:{ALICE_KEY}", "CONSOLE_SECRET_KEY": "too-short"})
    explicit = load_config({"OPERATOR_KEYS": f"alice:{ALICE_KEY}", "CONSOLE_SECRET_KEY": "s" * 40})
    assert explicit.console_session_key == b"s" * 40
    with pytest.raises(ConfigError, match="CONSOLE_TRUSTED_PROXIES"):
        load_config({"CONSOLE_TRUSTED_PROXIES": "-1"})


def test_a_key_matches_only_itself():
    assert auth.match_key(ALICE_KEY, OPERATORS).name == "alice"
    assert auth.match_key(BOB_KEY, OPERATORS).name == "bob"
    for wrong in ("", ALICE_KEY[:-1], ALICE_KEY + "x", ALICE_KEY.upper(), f"alice:{ALICE_KEY}"):
        assert auth.match_key(wrong, OPERATORS) is None


# ---- access -------------------------------------------------------------------------------


def _console_rules(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("console.") and rule.endpoint not in auth.PUBLIC_ENDPOINTS:
            path = rule.rule.replace("<event_id>", "evt_1").replace("<invoice_id>", ACME_0001)
            yield rule, path.replace("<customer_id>", ACME)


def test_no_console_page_or_action_without_login(client, mirrored):
    rules = list(_console_rules(mirrored))
    assert len(rules) >= 14
    for rule, path in rules:
        if "GET" in rule.methods:
            response = client.get(path)
            assert response.status_code == 302, path
            assert response.headers["Location"].startswith("/console/login?next=")
        if "POST" in rule.methods:
            response = client.post(path, data={"reason": "x"})
            assert response.status_code in (400, 401), path  # no token, or no session: refused either way
            assert "ACME" not in text(response)
    with get_services(mirrored).db.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(OperatorAction)) == 0
    assert not pause.get_state(get_services(mirrored).db).paused


@pytest.mark.parametrize("config_overrides", [{"operator_keys": ()}])
def test_without_operator_keys_the_console_is_closed(client):
    for path in ("/console/login", "/console/events", "/console/invoices"):
        response = client.get(path)
        assert response.status_code == 403 and "OPERATOR_KEYS" in text(response)
    assert client.post("/console/login", data={"key": "anything-at-all-123"}).status_code in (400, 403)


def test_login_with_a_key_and_out_again(client):
    response = client.get("/console/invoices?status=paid")
    assert response.headers["Location"] == "/console/login?next=/console/invoices?status%3Dpaid"
    response = login(client, next="/console/invoices?status=paid")
    assert response.status_code == 302 and response.headers["Location"] == "/console/invoices?status=paid"
    page = client.get("/console/invoices")
    assert page.status_code == 200 and "alice" in text(page)
    assert client.post("/console/logout", data={"csrf_token": csrf_of(page)}).status_code == 302
    assert client.get("/console/invoices").status_code == 302


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "/api/v1/x"]
)
def test_login_never_redirects_off_the_console(client, target):
    assert login(client, next=target).headers["Location"] == "/console/events"


def test_a_wrong_key_is_refused_and_attempts_are_limited_per_address(app, client):
    for _ in range(auth.MAX_FAILURES):
        response = login(client, key="not-the-key-000000000")
        assert response.status_code == 401 and "not valid" in text(response)
    refused = login(client, key=ALICE_KEY)  # even the right key, until the window passes
    assert refused.status_code == 429 and "Too many" in text(refused)
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "10.0.0.7"
    assert login(other, key=ALICE_KEY).status_code == 302


def test_failed_logins_are_counted_in_this_process_while_redis_is_down(app, client, monkeypatch):
    import redis

    def unreachable(*_args, **_kwargs):
        raise redis.ConnectionError("down")

    connection = get_services(app).queue.connection
    monkeypatch.setattr(connection, "get", unreachable)
    monkeypatch.setattr(connection, "pipeline", unreachable)
    for _ in range(auth.MAX_FAILURES):
        assert login(client, key="not-the-key-000000000").status_code == 401
    assert login(client, key=ALICE_KEY).status_code == 429


def _cookie_header(response) -> str:
    (cookie,) = [v for v in response.headers.getlist("Set-Cookie") if v.startswith("whs_console=")]
    return cookie


def test_session_cookie_is_httponly_samesite_and_secure_over_https(app, client):
    cookie = _cookie_header(login(client))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http in development
    assert "Secure" in _cookie_header(login(app.test_client(), base_url="https://localhost"))
    spoofed = app.test_client()  # X-Forwarded-Proto from a client nobody vouches for is ignored
    spoofed.environ_base["HTTP_X_FORWARDED_PROTO"] = "https"
    assert "Secure" not in _cookie_header(login(spoofed))


@pytest.mark.parametrize("config_overrides", [{"operator_keys": OPERATORS, "console_trusted_proxies": 1}])
def test_behind_a_trusted_proxy_its_forwarded_proto_and_address_count(app):
    def browser(address, spoofed="6.6.6.6"):
        # The browser may send any X-Forwarded-For; the one trusted proxy appends what it saw.
        client = app.test_client()
        client.environ_base.update(
            HTTP_X_FORWARDED_PROTO="https", HTTP_X_FORWARDED_FOR=f"{spoofed}, {address}"
        )
        return client

    response = login(browser("1.2.3.4"))
    assert "Secure" in _cookie_header(response)
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    for attempt in range(auth.MAX_FAILURES):
        wrong = login(browser("1.2.3.4", spoofed=f"7.7.7.{attempt}"), key="not-the-key-000000000")
        assert wrong.status_code == 401
    assert login(browser("1.2.3.4", spoofed="8.8.8.8")).status_code == 429  # spoofing does not reset it
    assert login(browser("1.2.3.5")).status_code == 302


def test_every_post_needs_the_sessions_csrf_token(app, console, services):
    for data in ({}, {"csrf_token": ""}, {"csrf_token": "forged-token"}):
        response = console.post("/console/processing/pause", data={"reason": "x", **data})
        assert response.status_code == 400 and "security token" in text(response)
    other = app.test_client()
    login(other, key=BOB_KEY)
    response = console.post(
        "/console/processing/pause", data={"csrf_token": csrf_of(other.get("/console/events"))}
    )
    assert response.status_code == 400  # bob's token is not alice's
    token = csrf_of(console.get("/console/events"))
    response = console.post(
        "/console/processing/pause", data={"csrf_token": token}, headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403
    assert not pause.get_state(services.db).paused
    assert client_login_needs_token(app)


def client_login_needs_token(app) -> bool:
    fresh = app.test_client()
    response = fresh.post("/console/login", data={"key": ALICE_KEY})
    return response.status_code == 400 and "whs_console" not in "".join(
        response.headers.getlist("Set-Cookie")
    )


def test_security_headers_on_every_console_response(client, console):
    for response in (
        client.get("/console/login"),
        console.get("/console/events"),
        console.get("/console/nope"),
    ):
        csp = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp and "script-src" not in csp
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Referrer-Policy"] == "no-referrer"


def test_removing_a_key_ends_its_sessions(app, console):
    services = get_services(app)
    assert console.get("/console/events").status_code == 200
    # Same signing key (as with CONSOLE_SECRET_KEY set), alice's key removed.
    services.config = services.config.with_overrides(operator_keys=OPERATORS[1:], console_secret_key=None)
    app.secret_key = Config(operator_keys=OPERATORS).console_session_key
    assert console.get("/console/events").status_code == 302


def test_a_session_expires_after_a_working_day(console, monkeypatch):
    assert console.get("/console/events").status_code == 200
    later = auth.time.time() + auth.SESSION_HOURS * 3600 + 1
    monkeypatch.setattr(auth.time, "time", lambda: later)
    assert console.get("/console/events").status_code == 302


# ---- pages --------------------------------------------------------------------------------


def test_invoice_list_filters_by_status_entity_number_and_date(console, mirrored):
    page = text(console.get("/console/invoices"))
    for number in ("ACME-0001", "ACME-0013", "GLOBEX-0001", "HOOLI-0001", "INITECH-0001"):
        assert number in page
    assert "Acme Robotics" in page and "org_acme" in page and "159.84 USD" in page
    paid = table(console.get("/console/invoices?status=paid"))
    assert "ACME-0001" in paid and "GLOBEX-0007" not in paid and "HOOLI-0001" not in paid
    globex = table(console.get("/console/invoices?entity=org_globex"))
    assert "GLOBEX-0001" in globex and "GLOBEX-0007" in globex and "ACME-0001" not in globex
    both = table(console.get("/console/invoices?entity=org_globex&status=void"))
    assert "GLOBEX-0001" in both and "GLOBEX-0007" not in both
    assert "ACME-0001" not in table(console.get("/console/invoices?q=GLOB"))
    assert "No invoices match" in text(console.get("/console/invoices?issued_from=2099-01-01"))
    for literal in ("ACME_", "ACME%", "%", "ACME\\"):  # LIKE's wildcards and escape match as typed
        assert "ACME-0001" not in table(console.get("/console/invoices", query_string={"q": literal}))
    assert "ACME-0001" in table(console.get("/console/invoices", query_string={"q": "ACME-"}))
    issued = console.get("/console/invoices?issued_from=2024-01-01&issued_to=2025-01-01")
    assert "Newest issued first" in text(issued) and "ACME-0001" in table(issued)
    assert "ACME-0013" not in table(issued)
    bad = console.get("/console/invoices?issued_from=yesterday-ish")
    assert bad.status_code == 400 and "issued from" in text(bad)


def test_invoice_page_shows_lines_by_category_tax_trail_credit_notes_and_links(console, mirrored):
    response = console.get(f"/console/invoices/{ACME_0001}")
    page = text(response)
    assert response.status_code == 200 and "ACME-0001" in page
    for heading in ("Usage", "Fixed fees", "Adjustments", "Tax", "Status trail", "Credit notes"):
        assert heading in page
    assert 'id="lines-usage"' in page and 'id="lines-adjustment"' in page
    assert page.count('class="badge s-') >= 4  # status + trail
    assert "issued" in page and "cn_" not in page or "CN" in page
    assert 'rel="noreferrer noopener">Hosted invoice' in page and ">PDF<" in page
    assert console.get("/console/invoices/in_nope").status_code == 404
    assert console.get("/console/invoices/in%00x").status_code == 404


def test_links_from_payloads_are_only_http(console, mirrored, services):
    from webhook_service.core.models import Invoice

    with services.db.sessions() as session, session.begin():
        session.get(Invoice, ACME_0001).hosted_invoice_url = "javascript:alert(1)"
    page = text(console.get(f"/console/invoices/{ACME_0001}"))
    assert "javascript:" not in page and "No hosted invoice" in page


def test_text_from_stripe_is_escaped(console, mirrored, services):
    from webhook_service.core.models import Customer

    with services.db.sessions() as session, session.begin():
        session.get(Customer, ACME).name = "<script>alert(1)</script>"
    for path in ("/console/invoices", f"/console/customers/{ACME}", f"/console/invoices/{ACME_0001}"):
        page = text(console.get(path))
        assert "<script>" not in page and "&lt;script&gt;" in page


def test_past_due_triage_lists_overdue_invoices_with_their_notifications(console, mirrored):
    page = text(console.get("/console/invoices/past-due"))
    assert "HOOLI-0001" in page and "ACME-0001" not in page
    assert "admins" in page


def test_customer_page_shows_entity_credit_per_currency_and_ledger(console, mirrored):
    page = text(console.get(f"/console/customers/{ACME}"))
    assert "Acme Robotics" in page and "company" in page and "org_acme" in page
    assert 'id="credit-balances"' in page and "10.00 USD" in page
    assert 'id="ledger"' in page and "credit note" in page
    listing = table(console.get("/console/customers?q=Glob"))
    assert "Globex" in listing and "Acme" not in listing
    assert console.get("/console/customers/cus_nope").status_code == 404


def test_customer_page_reads_credit_from_the_balance_table(console, mirrored, services):
    # The page shows the mirror's balance per currency (customer_balances), as the read API does,
    # not a sum the page computes from the ledger.
    with services.db.sessions() as session, session.begin():
        session.add(CustomerBalance(customer_id=ACME, currency="eur", credit_balance=2_500))
    page = text(console.get(f"/console/customers/{ACME}"))
    credit = page[page.index('id="credit-balances"') :].split("</table>")[0]
    assert "25.00 EUR" in credit and "10.00 USD" in credit


@pytest.mark.postgresql_only
def test_customer_search_ignores_case_and_uses_the_prefix_indexes(console, mirrored, services):
    assert "Globex" in table(console.get("/console/customers?q=gLOB"))
    plans = like_query_plans(services.db.engine, lambda: console.get("/console/customers?q=Acme"))
    assert plans and all("ix_customers_name_prefix" in plan and "ix_customers_email_prefix" in plan
                         for plan in plans), plans  # fmt: skip


def test_event_list_filters_and_shows_why_events_failed(console, mirrored, services):
    with services.db.sessions() as session, session.begin():
        event = session.scalars(sa.select(StripeEvent).where(StripeEvent.type == "invoice.paid")).first()
        event.status, event.last_error = "failed", "RuntimeError: the handler broke\nTraceback line two"
        failed_id = event.id
    page = table(console.get("/console/events?status=failed&status=retrying"))
    assert failed_id in page and "RuntimeError: the handler broke" in page and "line two" not in page
    assert "customer.created" not in page
    typed = table(console.get("/console/events?type=customer.created"))
    assert "customer.created" in typed and "invoice.paid" not in typed
    by_object = table(console.get(f"/console/events?object={ACME_0001}"))
    assert "invoice.finalized" in by_object and "customer.created" not in by_object
    assert "No events match" in text(console.get("/console/events?until=2000-01-01"))
    assert console.get("/console/events?since=nonsense").status_code == 400
    shown = text(console.get(f"/console/events/{failed_id}"))
    assert "Replay this event" in shown and "&#34;type&#34;: &#34;invoice.paid&#34;" in shown
    assert "line two" in shown  # the whole error on the event's own page
    with services.db.sessions() as session, session.begin():
        session.get(StripeEvent, failed_id).last_error = (
            "DataError: value too long [SQL: UPDATE customers SET email=%(email)s] "
            "[parameters: {'email': 'jane@customer.example'}]"
        )
    listed = table(console.get("/console/events?status=failed"))
    assert "DataError: value too long" in listed and "[SQL" not in listed and "jane@" not in listed


def test_event_pages_step_through_the_log_without_gaps_or_repeats(console, services):
    now = datetime.now(UTC)
    rows = [  # three events per second: pages must break ties on the id
        {"id": f"evt_page_{i:04d}", "type": "invoice.paid", "status": "processed", "payload": "{}",
         "received_at": now - timedelta(seconds=i // 3), "attempts": 1, "livemode": False}
        for i in range(PAGE_SIZE * 2 + 7)
    ]  # fmt: skip
    with services.db.sessions() as session, session.begin():
        session.execute(sa.insert(StripeEvent), rows)
    seen, path = [], "/console/events?status=processed&status=failed"
    while path:
        page = text(console.get(path))
        seen += re.findall(r"/console/events/(evt_page_\d+)\"", page)
        more = re.search(r'rel="next" href="([^"]+)"', page)
        path = more[1].replace("&amp;", "&") if more else None
    assert sorted(seen) == sorted(row["id"] for row in rows) and len(seen) == len(set(seen))


def test_processing_page_shows_depth_age_and_state(console, services):
    page = text(console.get("/console/processing"))
    assert 'id="processing-state">running' in page and 'id="count-queued"' in page


# ---- actions ------------------------------------------------------------------------------


def _audit(services) -> list[OperatorAction]:
    with services.db.sessions() as session:
        return list(session.scalars(sa.select(OperatorAction).order_by(OperatorAction.id)))


def test_pause_and_resume_from_the_console_are_audited_with_the_operator(console, services):
    response = post(console, "/console/processing/pause", reason="bad deploy")
    assert response.status_code == 302
    state = pause.get_state(services.db)
    assert state.paused and state.by == "console:alice" and state.reason == "bad deploy"
    assert "paused" in text(console.get("/console/processing"))
    post(console, "/console/processing/resume")
    assert not pause.get_state(services.db).paused
    actions = [(row.actor, row.action) for row in _audit(services)]
    assert ("console:alice", "pause") in actions and ("console:alice", "resume") in actions
    assert actions[0] == ("console:alice", "console.login")
    audit_page = text(console.get("/console/audit"))
    assert audit_page.index("resume") < audit_page.index("pause")  # newest first


def _fail_events(services, event_type: str) -> list[str]:
    with services.db.sessions() as session, session.begin():
        rows = session.scalars(sa.select(StripeEvent).where(StripeEvent.type == event_type)).all()
        for row in rows:
            row.status, row.last_error = "failed", "RuntimeError: boom"
        return [row.id for row in rows]


def test_replay_one_event_from_its_page(app, console, mirrored, services):
    (event_id,) = _fail_events(services, "invoice.voided")
    response = post(console, f"/console/events/{event_id}/replay")
    assert response.status_code == 302
    assert "queued for replay" in text(console.get(response.headers["Location"]))
    run_worker(app)
    with services.db.sessions() as session:
        assert session.get(StripeEvent, event_id).status == "processed"
    assert ("console:alice", "replay") in [(row.actor, row.action) for row in _audit(services)]


def test_replay_by_filter_shows_the_dry_run_count_first(app, console, mirrored, services):
    failed = _fail_events(services, "invoice.finalized")
    confirm = console.get("/console/events/replay?type=invoice.finalized")
    assert confirm.status_code == 200
    assert f'id="replay-count">{len(failed)}<' in text(confirm)
    with services.db.sessions() as session:  # the dry run changed nothing
        assert {session.get(StripeEvent, i).status for i in failed} == {"failed"}
    response = post(console, "/console/events/replay", type="invoice.finalized", expected=str(len(failed)))
    assert response.status_code == 302
    assert f"{len(failed)} event(s) queued for replay" in text(console.get(response.headers["Location"]))
    run_worker(app)
    with services.db.sessions() as session:
        assert {session.get(StripeEvent, i).status for i in failed} == {"processed"}


def test_invoice_pages_step_through_a_number_search_and_a_date_range(console, services):
    from webhook_service.core.models import Invoice

    start = datetime(2025, 3, 1, tzinfo=UTC)
    rows = [  # two invoices per issue time: pages must break ties on the id
        {"id": f"in_page_{i:04d}", "number": f"PAGE-{i:04d}", "status": "paid", "total": 100,
         "currency": "usd", "created_at": start + timedelta(minutes=i // 2),
         "issued_at": start + timedelta(minutes=i // 2), "version_key": f"1.{i}"}
        for i in range(PAGE_SIZE * 2 + 5)
    ]  # fmt: skip
    with services.db.sessions() as session, session.begin():
        session.execute(sa.insert(Invoice), rows)
    for first in (
        "/console/invoices?q=PAGE-",
        "/console/invoices?issued_from=2025-03-01&issued_to=2025-03-02",
    ):
        seen, path = [], first
        while path:
            page = text(console.get(path))
            seen += re.findall(r">(PAGE-\d+)</a>", page)
            more = re.search(r'rel="next" href="([^"]+)"', page)
            path = more[1].replace("&amp;", "&") if more else None
        assert seen == sorted((row["number"] for row in rows), reverse=True), first


def test_a_payment_before_its_invoice_shows_no_placeholder_invoice(app, console, stripe):
    """As in the JSON API: the row invoice_payment.paid leaves before its invoice is no invoice."""
    invoice_id = deliver_payment_before_its_invoice(app, stripe)
    assert invoice_id not in text(console.get("/console/invoices"))
    shown = console.get(f"/console/invoices/{invoice_id}")
    assert shown.status_code == 404 and "only a payment for it arrived" in text(shown)

"""The console in a real browser: Debian's headless Chromium driven by Playwright.

The app runs in a real HTTP server thread on a free port, on the run's PostgreSQL database and
Redis, with the fixtures mirrored by a real worker. JavaScript is off in every page: the console
must work without it. Playwright only drives /usr/bin/chromium (`apt-get install chromium`;
.ci/run installs it); it never downloads a browser.

Set CONSOLE_SCREENSHOT=docs/console.png to refresh the README's screenshot.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from werkzeug.serving import make_server

import handlers
from tests.conftest import SECRET, _clean, make_config
from tests.helpers import run_worker
from webhook_service.core.config import OperatorKey
from webhook_service.core.models import StripeEvent
from webhook_service.core.signature import sign
from webhook_service.processing import pause
from webhook_service.processing.sweep import sweep_past_due
from webhook_service.web.app import create_app
from webhook_service.web.services import get_services

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("CONSOLE_TEST_CHROMIUM", "/usr/bin/chromium")
KEY = "browser-test-key-0123456789abcdef"
ACME_0001 = "in_1Jxuw3WLVK9m6ta9dGMeh1YW"
LAPTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless; a missing binary fails the run with how to install it."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (.ci/run does it)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def server(postgresql_database_url, redis_url, fixture_events):
    """The app on a free port, its database holding the mirrored fixtures; no failed retries wait."""
    _clean(postgresql_database_url)
    app = create_app(
        make_config(
            postgresql_database_url, redis_url, operator_keys=(OperatorKey("alice", KEY),), retry_intervals=()
        )
    )
    services = get_services(app)
    services.queue.connection.flushdb()
    client = app.test_client()
    for event in fixture_events:
        body = json.dumps(event).encode()
        headers = {"Content-Type": "application/json", "Stripe-Signature": sign(body, SECRET)}
        response = client.post("/webhooks/stripe", data=body, headers=headers)
        assert response.status_code == 200
    run_worker(app)
    sweep_past_due(services.db)
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, name="console-test-http", daemon=True)
    thread.start()
    app.base_url = f"http://127.0.0.1:{http.server_port}"
    yield app
    http.shutdown()
    services.queue.connection.flushdb()
    services.db.engine.dispose()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(java_script_enabled=False, viewport=LAPTOP, base_url=server.base_url)
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    yield tab
    context.close()


def log_in(page, key=KEY):
    page.goto("/console/login")
    page.get_by_label("Operator key").fill(key)
    page.get_by_role("button", name="Log in").click()


def wait_for_path(page, path: str) -> None:
    page.wait_for_url(re.compile(rf"^https?://[^/]+{re.escape(path)}$"))


def rows(page, selector="table tbody tr") -> list[str]:
    page.wait_for_load_state()  # a click that submits a form returns once the navigation starts
    return [row.inner_text() for row in page.locator(selector).all()]


def test_log_in_with_the_keyboard_alone(page):
    page.goto("/console/invoices")  # not logged in: the login form, which comes back here after
    assert page.url.endswith("/console/login?next=/console/invoices")
    # The key field has the focus (autofocus); wait for it, or typing races the page settling.
    page.wait_for_function("document.activeElement && document.activeElement.id === 'key'", timeout=5000)
    page.keyboard.type(KEY)
    page.keyboard.press("Enter")
    wait_for_path(page, "/console/invoices")
    assert page.get_by_role("heading", name="Invoices").is_visible()
    assert "alice" in page.locator("header").inner_text()
    for _ in range(20):  # Tab through the header to the Audit link, and open it with Enter
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Audit":
            break
    page.keyboard.press("Enter")
    wait_for_path(page, "/console/audit")
    assert "console.login" in page.locator("#audit").inner_text()


def test_a_wrong_key_is_refused(page, server):
    log_in(page, key="not-the-key-0000000000")
    assert page.get_by_role("alert").inner_text() == "That key is not valid."
    page.goto("/console/events")
    assert "/console/login" in page.url


def test_filter_invoices_by_status_and_entity(page):
    log_in(page)
    page.goto("/console/invoices")
    page.get_by_label("Status").select_option("paid")
    page.get_by_role("button", name="Filter").click()
    listed = rows(page)
    assert listed and all("paid" in row for row in listed)
    assert any("ACME-0001" in row for row in listed) and not any("HOOLI" in row for row in listed)
    page.get_by_label("Status").select_option("")
    page.get_by_label("Billable entity id").fill("org_globex")
    page.get_by_role("button", name="Filter").click()
    listed = rows(page)
    assert len(listed) == 2 and all("Globex Corporation" in row for row in listed)
    page.get_by_label("Status").select_option("void")
    page.get_by_role("button", name="Filter").click()
    assert [row.split()[0] for row in rows(page)] == ["GLOBEX-0001"]


def test_open_an_invoice_and_see_its_lines_trail_and_credit_notes(page):
    log_in(page)
    page.goto("/console/invoices?q=ACME-0001")
    page.get_by_role("link", name="ACME-0001").click()
    assert page.get_by_role("heading", level=1).inner_text().startswith("Invoice ACME-0001")
    for category in ("usage", "fixed_fee", "adjustment"):
        assert page.locator(f"#lines-{category} tr").count() >= 2  # the group's head and a line
    assert "Tax" in page.locator("#lines-tax").inner_text()
    trail = page.locator("#status-trail li").all_inner_texts()
    assert len(trail) == 3 and "paid" in trail[-1]
    assert "issued" in page.locator("#credit-notes").inner_text()
    assert page.get_by_role("link", name="Hosted invoice").get_attribute("href").startswith("https://")
    assert page.get_by_role("link", name="PDF").get_attribute("href").startswith("https://")


def test_open_a_failed_event_replay_it_and_see_it_processed(page, server, monkeypatch):
    services = get_services(server)
    with services.db.sessions() as session:
        event_id = session.scalar(sa.select(StripeEvent.id).where(StripeEvent.type == "invoice.voided"))

    # A handler that breaks (a bad deploy): the event fails for good (no retries configured).
    def broken(event, session):
        raise RuntimeError("invoice handler deployed broken")

    monkeypatch.setitem(handlers.EVENT_HANDLERS, "invoice.voided", broken)
    with services.db.sessions() as session, session.begin():
        session.execute(sa.update(StripeEvent).where(StripeEvent.id == event_id).values(status="queued"))
    services.queue.enqueue_drain()
    run_worker(server)
    monkeypatch.undo()  # the fix is deployed

    log_in(page)
    page.goto("/console/events")
    page.get_by_role("link", name="Failed and retrying").click()
    listed = rows(page)
    assert len(listed) == 1 and "RuntimeError: invoice handler deployed broken" in listed[0]
    page.get_by_role("link", name=event_id).click()
    assert page.locator("#event-status").inner_text() == "failed"
    page.get_by_role("button", name="Replay this event").click()
    assert "queued for replay" in page.get_by_role("status").inner_text()
    run_worker(server)
    page.reload()
    assert page.locator("#event-status").inner_text() == "processed"


def test_replay_by_filter_after_the_dry_run_count(page, server):
    services = get_services(server)
    with services.db.sessions() as session, session.begin():
        failed = session.scalars(
            sa.update(StripeEvent)
            .where(StripeEvent.type == "invoice.finalized")
            .values(status="failed", last_error="RuntimeError: lost connection to the tax service")
            .returning(StripeEvent.id)
        ).all()
    log_in(page)
    page.goto("/console/events")
    page.get_by_label("failed").check()
    page.get_by_label("Type").fill("invoice.finalized")
    page.get_by_role("button", name="Filter").click()
    assert len(rows(page)) == len(failed)
    page.get_by_role("link", name="Replay matching…").click()
    assert page.locator("#replay-count").inner_text() == str(len(failed))
    page.get_by_role("button", name=f"Replay {len(failed)} event(s)").click()
    assert f"{len(failed)} event(s) queued for replay" in page.get_by_role("status").inner_text()
    run_worker(server)
    page.goto("/console/events?type=invoice.finalized")
    assert all("processed" in row for row in rows(page))
    page.goto("/console/audit")
    assert re.search(r"console:alice\s+replay", page.locator("#audit").inner_text())


def test_pause_and_resume(page, server):
    services = get_services(server)
    log_in(page)
    page.get_by_role("link", name="Processing").click()
    assert page.locator("#processing-state").inner_text() == "running"
    page.get_by_label("Reason (for the audit trail)").fill("checking a bad deploy")
    page.get_by_role("button", name="Pause processing").click()
    assert page.locator("#processing-state").inner_text() == "paused"
    assert "checking a bad deploy" in page.locator("main").inner_text()
    assert pause.get_state(services.db).by == "console:alice"
    page.get_by_role("button", name="Resume processing").click()
    assert page.locator("#processing-state").inner_text() == "running"
    page.goto("/console/audit")
    audit = page.locator("#audit tbody").inner_text()
    assert audit.index("resume") < audit.index("pause")


def test_a_form_without_its_csrf_token_is_refused(page, server):
    log_in(page)
    page.goto("/console/processing")
    page.locator("form[action$='/processing/pause'] input[name=csrf_token]").evaluate(
        "input => input.remove()"
    )
    page.get_by_role("button", name="Pause processing").click()
    assert "security token is missing" in page.locator("main").inner_text()
    assert not pause.get_state(get_services(server).db).paused


def test_pages_fit_a_phone_and_a_screenshot_for_the_readme(browser, server, tmp_path):
    context = browser.new_context(java_script_enabled=False, viewport=PHONE, base_url=server.base_url)
    phone = context.new_page()
    log_in(phone)
    for path in (
        "/console/events",
        "/console/invoices",
        f"/console/invoices/{ACME_0001}",
        "/console/processing",
    ):
        phone.goto(path)
        # The page itself never scrolls sideways; wide tables scroll inside their frame.
        assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), path
    context.close()
    context = browser.new_context(java_script_enabled=False, viewport=LAPTOP, base_url=server.base_url)
    laptop = context.new_page()
    log_in(laptop)
    laptop.goto("/console/invoices")
    target = Path(os.environ.get("CONSOLE_SCREENSHOT") or tmp_path / "console.png")
    laptop.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000
    context.close()

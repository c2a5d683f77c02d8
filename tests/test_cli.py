"""The console script as an operator runs it: real processes, real databases."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tests.conftest import SECRET
from webhook_service.core.models import EXPRESSION_INDEXES, Base
from webhook_service.processing.db import alembic_head, current_revision, upgrade

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args, env=None, cwd=None, timeout=120):
    """Run `webhook-service ARGS` in a clean environment plus `env`."""
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DATABASE_", "REDIS_", "PORTAL_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "webhook_service.cli", *args], env={**base, **(env or {})}, cwd=cwd,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def error_lines(result) -> list[str]:
    """The command's own error lines (log lines, JSON, are separate)."""
    return [line for line in result.stderr.splitlines() if line.startswith("webhook-service: error:")]


def _modelled(obj, name, type_, reflected, compare_to) -> bool:
    """Expression indexes that only migrations create (PostgreSQL) are not in the models."""
    return not (type_ == "index" and name in EXPRESSION_INDEXES)


def test_migrations_match_the_models(database_url):
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": _modelled})
        assert compare_metadata(context, Base.metadata) == []
    assert current_revision(engine) == alembic_head()
    engine.dispose()


@pytest.mark.process
def test_db_upgrade_creates_the_schema_on_a_fresh_sqlite_file(tmp_path):
    result = run_cli("db", "upgrade", env={"DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}"})
    assert result.returncode == 0, result.stderr
    assert f"database upgraded to {alembic_head()}" in result.stdout
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    assert {"stripe_events", "invoices", "invoice_lines", "invoice_status_history", "customers"} <= set(
        sa.inspect(engine).get_table_names()
    )


@pytest.mark.process
def test_malformed_secret_fails_fast_with_one_line(tmp_path):
    result = run_cli("events", "list", env={"STRIPE_WEBHOOK_SECRETS": "sk_live_oops"}, cwd=tmp_path)
    assert result.returncode == 2
    [line] = error_lines(result)
    assert "STRIPE_WEBHOOK_SECRETS" in line and "sk_live_oops" not in result.stderr


@pytest.mark.process
def test_unreachable_database_fails_fast_with_one_line(tmp_path):
    env = {
        "DATABASE_URL": "postgresql://root@127.0.0.1:1/nope?connect_timeout=1",
        "STRIPE_WEBHOOK_SECRETS": SECRET,
    }
    result = run_cli("events", "list", env=env, cwd=tmp_path)
    assert result.returncode == 2
    [line] = error_lines(result)
    assert "cannot connect to DATABASE_URL" in line and "Connection refused" in line


@pytest.mark.process
def test_serve_refuses_to_start_without_a_secret(tmp_path):
    result = run_cli("serve", cwd=tmp_path)
    assert result.returncode == 2 and "STRIPE_WEBHOOK_SECRETS is not set" in result.stderr


@pytest.mark.process
def test_worker_refuses_to_start_without_redis(tmp_path):
    result = run_cli("worker", "--burst", cwd=tmp_path)
    assert result.returncode == 2 and "REDIS_URL is not set" in result.stderr


@pytest.mark.process
def test_unmigrated_production_database_is_refused(postgresql_database_url, tmp_path):
    url = sa.engine.make_url(postgresql_database_url)
    import psycopg

    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    name = url.database + "_empty"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        empty = url.set(database=name).render_as_string(hide_password=False)
        result = run_cli("events", "list", env={"DATABASE_URL": empty}, cwd=tmp_path)
        assert result.returncode == 2 and "webhook-service db upgrade" in result.stderr
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.mark.slow
def test_demo_runs_on_embedded_defaults_and_prints_the_mirror(tmp_path):
    """The README's first command, as a newcomer runs it: no Redis, no DATABASE_URL."""
    result = run_cli("demo", cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "(13 recognised as duplicates), 0 errors" in out
    assert '"ignored": 2, "processed": 48' in out
    invoices_part = out.split("Past-due notifications:")[0]
    rows = {line.split()[0]: line for line in invoices_part.splitlines() if re.match(r"[A-Z]+-\d{4} ", line)}
    assert set(rows) == {"ACME-0001", "ACME-0013", "GLOBEX-0001", "GLOBEX-0007", "INITECH-0001",
                         "UMBRELLA-0001", "HOOLI-0001"}  # fmt: skip
    assert " paid " in rows["ACME-0001"] and "157.90 USD" in rows["ACME-0001"]
    assert " uncollectible " in rows["GLOBEX-0007"] and rows["GLOBEX-0007"].endswith("1,738.00 USD")
    assert " open " in rows["INITECH-0001"] and " void " in rows["GLOBEX-0001"]
    assert " past_due " in rows["HOOLI-0001"] and " past_due " in rows["UMBRELLA-0001"]
    assert rows["INITECH-0001"].split()[-4:] == [
        "500.00",
        "USD",
        "4,300.00",
        "USD",
    ]  # partial pre-payment credit
    credit = out.split("Customer credit:")[1]
    assert re.search(r"Acme Robotics\s+company org_acme\s+10\.00 USD\n\s+credit in EUR\s+30\.00 EUR", credit)
    assert re.search(r"credit_note_voided\s+credit_note cn_\w+\s+-5\.00 USD", credit)
    assert re.search(r"Globex Corporation\s+organization org_globex\s+25\.00 USD\n\s+adjustment", credit)
    assert "1 invoice(s) moved to past due" in out  # Umbrella: its due date passed with no event
    notes = out.split("Past-due notifications:")[1]
    for number in ("ACME-0013", "HOOLI-0001", "UMBRELLA-0001"):
        assert re.search(rf"{number}\s+admins\s+invoice_past_due", notes)
        assert re.search(rf"{number}\s+customer\s+invoice_past_due", notes)
    assert "dev mode" in result.stderr + result.stdout
    assert (tmp_path / "webhook_service.db").exists()
    # Running it again re-delivers everything: all duplicates, same table.
    again = run_cli("demo", cwd=tmp_path, timeout=180)
    assert again.returncode == 0 and "(63 recognised as duplicates)" in again.stdout


def test_upgrade_is_idempotent(tmp_path):
    url = f"sqlite:///{tmp_path / 'twice.db'}"
    upgrade(url)
    upgrade(url)
    assert current_revision(sa.create_engine(url)) == alembic_head()


@pytest.mark.slow
def test_serve_runs_receiver_and_in_process_worker_on_embedded_defaults(tmp_path, fixture_events):
    import time

    import requests

    from tests.conftest import free_port
    from webhook_service.core.signature import sign

    port = free_port()
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DATABASE_", "REDIS_", "PORTAL_"))
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "webhook_service.cli", "serve", "--port", str(port)],
        env={**base, "STRIPE_WEBHOOK_SECRETS": SECRET}, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "serve did not become ready"
            time.sleep(0.1)
        for event in fixture_events:
            body = json.dumps(event).encode()
            response = requests.post(
                f"{url}/webhooks/stripe", data=body, headers={"Stripe-Signature": sign(body, SECRET)}
            )
            assert response.status_code == 200
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'webhook_service.db'}")
        while True:
            with engine.connect() as conn:
                pending = conn.execute(
                    sa.text("SELECT count(*) FROM stripe_events WHERE status = 'queued'")
                ).scalar()
                paid = conn.execute(sa.text("SELECT count(*) FROM invoices WHERE status = 'paid'")).scalar()
            if pending == 0:
                break
            assert time.monotonic() < deadline + 30, "the in-process worker did not drain the events"
            time.sleep(0.1)
        assert paid == 2
        engine.dispose()
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=15)
    assert "dev mode: REDIS_URL is unset" in stderr and "dev mode: DATABASE_URL is unset" in stderr

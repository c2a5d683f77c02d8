"""Start-up as operators meet it: every process refuses bad ground with one line, gunicorn included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from tests.conftest import SECRET, free_port, make_config
from tests.test_cli import error_lines, run_cli
from webhook_service.web.app import create_app
from webhook_service.web.services import get_services

REPO = Path(__file__).resolve().parent.parent
#: The master refuses before any worker boots; generous for a loaded machine.
GUNICORN_REFUSAL_SECONDS = 30


@pytest.fixture
def unmigrated_database_url(postgresql_database_url):
    """An empty PostgreSQL database: what production looks like before `db upgrade`."""
    url = sa.engine.make_url(postgresql_database_url)
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"{url.database}_bare"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield url.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _clean_env(**extra: str) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STRIPE_", "DATABASE_", "REDIS_", "PORTAL_", "WEBHOOK_SERVICE_"))
    }
    return {**base, **extra}


def _run_gunicorn(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gunicorn", "wsgi:app", "--config", "gunicorn.conf.py",
         "--bind", f"127.0.0.1:{free_port()}", "--workers", "1"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=GUNICORN_REFUSAL_SECONDS,
    )  # fmt: skip


@pytest.mark.slow
def test_gunicorn_refuses_to_start_before_db_upgrade(unmigrated_database_url, redis_url):
    env = _clean_env(DATABASE_URL=unmigrated_database_url, REDIS_URL=redis_url, STRIPE_WEBHOOK_SECRETS=SECRET)
    result = _run_gunicorn(env)  # a crash-looping server would never return: timeout fails the test
    assert result.returncode == 2, result.stderr
    [line] = error_lines(result)
    assert "is at migration none" in line and "webhook-service db upgrade" in line
    assert "Traceback" not in result.stderr and "Booting worker" not in result.stderr


@pytest.mark.slow
def test_gunicorn_refuses_to_start_without_redis(postgresql_database_url):
    env = _clean_env(DATABASE_URL=postgresql_database_url, STRIPE_WEBHOOK_SECRETS=SECRET)
    result = _run_gunicorn(env)
    assert result.returncode == 2, result.stderr
    [line] = error_lines(result)
    assert "REDIS_URL is not set" in line and "webhook-service serve" in line
    assert "Booting worker" not in result.stderr


@pytest.mark.slow
def test_gunicorn_refuses_an_unreachable_database(redis_url):
    env = _clean_env(
        DATABASE_URL="postgresql://root@127.0.0.1:1/nope?connect_timeout=1",
        REDIS_URL=redis_url,
        STRIPE_WEBHOOK_SECRETS=SECRET,
    )
    result = _run_gunicorn(env)
    assert result.returncode == 2, result.stderr
    [line] = error_lines(result)
    assert "cannot connect to DATABASE_URL" in line


@pytest.mark.slow
@pytest.mark.parametrize("command", [["worker", "--burst"], ["scheduler"]])
def test_worker_and_scheduler_refuse_before_db_upgrade(command, unmigrated_database_url, redis_url, tmp_path):
    env = {"DATABASE_URL": unmigrated_database_url, "REDIS_URL": redis_url}
    result = run_cli(*command, env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    [line] = error_lines(result)
    assert "webhook-service db upgrade" in line


@pytest.mark.slow
def test_scheduler_refuses_to_start_without_redis(tmp_path):
    result = run_cli("scheduler", cwd=tmp_path)
    assert result.returncode == 2
    [line] = error_lines(result)
    assert "REDIS_URL is not set" in line


@pytest.mark.slow
def test_worker_logs_one_ready_line(postgresql_database_url, redis_url, tmp_path):
    env = {"DATABASE_URL": postgresql_database_url, "REDIS_URL": redis_url}
    result = run_cli("worker", "--burst", "--no-fork", env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    ready = [json.loads(line) for line in result.stderr.splitlines() if '"worker ready"' in line]
    assert len(ready) == 1
    assert ready[0]["role"] == "worker" and ready[0]["queue"] == "stripe-events" and ready[0]["pid"] > 0


def test_help_loads_no_app_stack():
    """`webhook-service --help` and argument errors cost click, not Flask, SQLAlchemy or RQ."""
    code = (
        "import sys, webhook_service.cli;"
        "print(sorted(m for m in ('flask', 'sqlalchemy', 'rq', 'redis', 'psycopg', 'sentry_sdk') "
        "if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert loaded.stdout.strip() == "[]"


def test_readyz_never_reports_the_embedded_queue_as_redis(database_url):
    app = create_app(make_config(database_url, None))
    try:
        response = app.test_client().get("/readyz")
        body = response.get_json()
        assert response.status_code == 200, body
        assert "redis" not in body["checks"]
        assert body["checks"]["queue"].startswith("embedded")
    finally:
        get_services(app).db.engine.dispose()


def test_demo_outside_a_checkout_says_where_its_fixtures_are(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from webhook_service import cli, demo

    monkeypatch.setattr(demo, "DEFAULT_FIXTURES", tmp_path / "site-packages" / "fixtures" / "events")
    result = CliRunner().invoke(cli.cli, ["demo"])
    assert result.exit_code == 2
    [line] = [line for line in result.output.splitlines() if line.startswith("webhook-service: error:")]
    assert "fixtures/events" in line and "--fixtures DIR" in line


def test_start_up_schema_check_agrees_with_alembic(database_url, unmigrated_database_url):
    from webhook_service.processing.db import alembic_head, current_revision, schema_head, schema_revision

    assert schema_head() == alembic_head()
    for url in (database_url, unmigrated_database_url):
        engine = sa.create_engine(url)
        try:
            assert schema_revision(engine) == current_revision(engine)
        finally:
            engine.dispose()


@pytest.mark.process
def test_a_worker_starts_without_loading_alembic_or_the_http_endpoints(postgresql_database_url, redis_url):
    """Alembic (with Mako and Pygments) is for `db upgrade`, and the API (flask-smorest, apispec) for
    the web tier: a worker reads the schema revision without the one and needs none of the other."""
    code = (
        "import sys; from webhook_service import startup;"
        "startup.build_app_or_exit(role='worker');"
        "print(*(m in sys.modules for m in ('alembic', 'mako', 'flask_smorest', 'apispec')))"
    )
    env = _clean_env(DATABASE_URL=postgresql_database_url, REDIS_URL=redis_url)
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False"] * 4

"""Shared fixtures: real PostgreSQL and Redis, SQLite as the embedded default.

Every test that asks for `services` or `app` runs once per database backend. PostgreSQL (the
machine's server) gets a throwaway database per test run. Redis is a private `redis-server`
started for the run on a free port (the machine's binary; RQ job ids are event ids, so two runs
sharing one Redis would take each other's jobs), flushed around each test; TEST_REDIS_URL points
the run at an existing server instead. The machine's own Redis on 6379 is exercised by
test_machine_services.py. A missing service is an error, never a skip.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import time
import urllib.parse
import uuid
from pathlib import Path

import psycopg
import pytest
import redis
import sqlalchemy as sa
from flask import Flask
from hypothesis import settings

from webhook_service.core.config import Config
from webhook_service.core.logging_setup import configure_logging
from webhook_service.core.models import Base
from webhook_service.core.signature import sign
from webhook_service.processing.db import Database, upgrade
from webhook_service.web import rejections
from webhook_service.web import services as services_module
from webhook_service.web.app import build_services, create_app, database_for, database_settings
from webhook_service.web.observability import init_sentry
from webhook_service.web.services import get_services

SECRET = "whsec_test_primary_0123456789abcdef"
OTHER_SECRET = "whsec_test_rolled_fedcba9876543210"
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://root@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL")
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "events"


#: `make test-fast` loads `fast`: every property test runs at most this many examples (see
#: tests/helpers.examples); `make test` and CI run the default profile, the full counts.
settings.register_profile("fast", max_examples=5)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
DRILLS = Path(__file__).resolve().parent / "drills"
#: `TEST_BACKENDS=postgresql` (what `make test-fast` sets) runs database tests on those backends only.
ONLY_BACKENDS = {name.strip() for name in os.environ.get("TEST_BACKENDS", "").split(",") if name.strip()}


def _require(what: str, check) -> None:
    try:
        check()
    except Exception as exc:  # noqa: BLE001
        pytest.exit(
            f"{what} is not reachable ({exc}); start it (see .ci/run) — tests never skip it", returncode=3
        )


@pytest.fixture(scope="session")
def postgresql_database_url():
    """A fresh PostgreSQL database for this run, migrated to head, dropped at the end."""
    _require(
        "PostgreSQL at " + PG_ADMIN_URL, lambda: psycopg.connect(PG_ADMIN_URL, connect_timeout=3).close()
    )
    name = f"whs_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        # Commits return before their WAL reaches the disk: what is lost is only what an operating
        # system crash would take, which no test makes (they kill our processes, never the server's).
        conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    base = sa.engine.make_url(PG_ADMIN_URL)
    url = base.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_database_url(tmp_path_factory):
    """A SQLite file migrated to head (the embedded default)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'portal.db'}"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def pgbouncer(postgresql_database_url, tmp_path_factory):
    """The run's own PgBouncer (transaction pooling) in front of the test PostgreSQL."""
    from tests.pgbouncer import PgBouncer

    url = sa.engine.make_url(postgresql_database_url)
    server = PgBouncer(
        tmp_path_factory.mktemp("pgbouncer"), free_port(), url.host or "127.0.0.1", url.port or 5432,
        [url.username or "root"],
    )  # fmt: skip
    _require("pgbouncer (the machine's binary; .ci/run installs it)", server.start)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pgbouncer_database_url(postgresql_database_url, pgbouncer):
    """The test PostgreSQL database, reached through PgBouncer."""
    url = sa.engine.make_url(postgresql_database_url).set(host="127.0.0.1", port=pgbouncer.port)
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session", params=["postgresql", "pgbouncer", "sqlite"])
def database_url(request):
    """Each database-backed test runs on PostgreSQL and on SQLite; modules marked `pgbouncer`
    (receiver, drains, drills, end-to-end) also through PgBouncer in transaction pooling mode."""
    return request.getfixturevalue(f"{request.param}_database_url")


def _own_database(url: str) -> str:
    """TEST_REDIS_URL for this xdist process: each its own database number (the given one plus
    the process's), since every test flushes its database and job ids are event ids."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    parts = urllib.parse.urlsplit(url)
    number = int(redis.connection.parse_url(url).get("db", 0)) + worker
    return urllib.parse.urlunsplit(parts._replace(path=f"/{number}"))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """The run's own Redis (or TEST_REDIS_URL's)."""
    if REDIS_URL:
        url = _own_database(REDIS_URL)
        _require("Redis at " + url, lambda: redis.Redis.from_url(url, socket_timeout=3).ping())
        yield url
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    _require("redis-server (the machine's binary)", server.start)
    yield server.url
    server.stop()


#: Children before parents, so each DELETE leaves no row pointing at a deleted one.
_TABLES = [table.name for table in reversed(Base.metadata.sorted_tables)]
#: One round trip on PostgreSQL: DELETE of the few rows a test leaves takes ~3 ms where TRUNCATE of
#: the 16 tables took ~190 ms (it replaces every table's and index's files), a third of the time of
#: a database test. Sequences restart as TRUNCATE's RESTART IDENTITY did.
_PG_CLEAN = "; ".join(
    [f"DELETE FROM {table}" for table in _TABLES]
    + ["SELECT setval(oid, 1, false) FROM pg_class WHERE relkind = 'S'"]
)


def clean_tables(engine: sa.Engine) -> None:
    """Empty every table (between tests, or between hypothesis examples)."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(_PG_CLEAN)
        else:
            for table in _TABLES:
                conn.execute(sa.text(f"DELETE FROM {table}"))


#: One cleaning engine per database for the whole run: a new connection per test cost PostgreSQL
#: a backend start and its catalog caches (about 10 ms of its CPU, where the DELETEs take 1 ms).
_CLEANERS: dict[str, sa.Engine] = {}


def _clean(database_url: str) -> None:
    if database_url not in _CLEANERS:  # pre-ping: a test may have terminated its connection
        _CLEANERS[database_url] = sa.create_engine(database_url, pool_size=1, pool_pre_ping=True)
    clean_tables(_CLEANERS[database_url])


def make_config(database_url: str, redis_url: str | None, **overrides) -> Config:
    """A test configuration: known secret, short retry intervals."""
    values = {
        "webhook_secrets": (SECRET,),
        "database_url": database_url,
        "database_url_is_default": False,
        "redis_url": redis_url,
        "retry_intervals": (1, 1),
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Config(**values)


@pytest.fixture
def config_overrides():
    """Override in a module or test to change the app's Config."""
    return {}


#: One Database (engine and sessions) per database settings for the whole run, as a real process
#: has one: SQLAlchemy compiles each statement once per engine, and a new engine per test compiled
#: every statement of every test again. Keyed on `database_settings`, so configurations that
#: differ elsewhere (a fake Stripe's port, retry intervals) share it.
_DATABASES: dict[tuple, Database] = {}
#: Idle connections a shared engine keeps for the next test; more are closed (3 xdist processes,
#: several engines each, stay well under PostgreSQL's max_connections of 100).
_KEEP_IDLE = 2


def _database_of(config: Config) -> Database:
    key = database_settings(config)
    if key not in _DATABASES:
        _DATABASES[key] = database_for(config)
    return _DATABASES[key]


def _release(application) -> None:
    """After a test: its pooled connections serve the next test (a new PostgreSQL connection costs
    the server a process and its catalog caches), unless the test left one checked out or the pool
    holds more than `_KEEP_IDLE`."""
    engine = get_services(application).db.engine
    if engine.pool.checkedout() or engine.pool.checkedin() > _KEEP_IDLE:
        engine.dispose()


@pytest.fixture(scope="session", autouse=True)
def _close_shared_engines():
    """Close the shared engines' connections when the run ends."""
    yield
    for engine in [database.engine for database in _DATABASES.values()] + list(_CLEANERS.values()):
        engine.dispose()


def _needs_http(request) -> bool:
    """Whether anything but `services` asks for the app: a test that only needs the services gets
    a worker's app, without the endpoints (about 1 ms to build where the full app takes about 30).
    One that then makes a request anyway gets a 404 and fails; it never passes by accident."""
    if "app" in request.node._fixtureinfo.argnames:
        return True
    for name, definitions in request.node._fixtureinfo.name2fixturedefs.items():
        if name != "services" and any("app" in definition.argnames for definition in definitions):
            return True
    return False


#: One full app per configuration for each test process, as a real process has one: building
#: the endpoints costs 20-45 ms (werkzeug compiles every rule, flask-smorest builds the OpenAPI
#: document), and 200 tests build one. What a test can change is built again for every test (the
#: services: queue, intake, Stripe access, the rejection tally) or put back (the Flask config,
#: the extensions, logging and Sentry as `create_app` sets them up).
_APPS: dict[tuple[Config, bool], tuple[Flask, dict, dict]] = {}


def _app_of(config: Config, http: bool) -> Flask:
    database = _database_of(config)
    if (config, http) not in _APPS:
        application = create_app(config, http=http, database=database)
        _APPS[config, http] = (application, dict(application.config), dict(application.extensions))
        return application
    application, settings, extensions = _APPS[config, http]
    configure_logging(config.log_level)
    init_sentry(config)
    application.config.clear()
    application.config.update(settings)
    application.extensions.clear()
    application.extensions.update(extensions)
    services_module.init_app(application, build_services(config, database))
    if http:  # a new tally (its hook is registered already)
        application.extensions[rejections.EXTENSION_KEY] = rejections.RejectionTally()
    return application


@pytest.fixture
def app(request, database_url, redis_url, config_overrides):
    _clean(database_url)
    connection = redis.Redis.from_url(redis_url)
    connection.flushdb()
    config = make_config(database_url, redis_url, **config_overrides)
    application = _app_of(config, _needs_http(request))
    yield application
    _release(application)
    connection.flushdb()
    connection.close()


@pytest.fixture
def pg_app(postgresql_database_url, redis_url):
    """An app on PostgreSQL only, for what only PostgreSQL has (advisory locks, statement counts)."""
    _clean(postgresql_database_url)
    redis.Redis.from_url(redis_url).flushdb()
    config = make_config(postgresql_database_url, redis_url)
    application = _app_of(config, True)
    yield application
    _release(application)


@pytest.fixture
def services(app):
    return get_services(app)


@pytest.fixture
def client(app):
    return app.test_client()


class StripeSender:
    """Posts events to the test client exactly as Stripe would: raw JSON, signed at send time."""

    def __init__(self, client):
        self.client = client

    def post(self, event: dict | bytes, *, secret: str = SECRET, timestamp: int | None = None, header=None):
        body = event if isinstance(event, bytes) else json.dumps(event).encode()
        signature = header if header is not None else sign(body, secret, timestamp)
        headers = {"Content-Type": "application/json"}
        if signature:
            headers["Stripe-Signature"] = signature
        return self.client.post("/webhooks/stripe", data=body, headers=headers)


@pytest.fixture
def stripe(client):
    return StripeSender(client)


def load_fixture_events() -> list[dict]:
    """Every committed fixture event, in file order (their true order within each API version)."""
    return [json.loads(path.read_text()) for path in sorted(FIXTURES.rglob("*.json"))]


@pytest.fixture
def fixture_events():
    return load_fixture_events()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A private redis-server on a free port, for drills that stop or restart Redis."""

    def __init__(self, tmp_path: Path):
        self.port = free_port()
        self.dir = tmp_path
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_timeout=0.5).ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def private_redis(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def pytest_collection_finish(session):
    """Move what collection loaded (modules, plugins, compiled regexes and ASTs) out of the garbage
    collector's sight: every full collection during the run scanned it all again, and the end of
    the run collects several times (a few seconds of CPU per test process in all)."""
    gc.freeze()


def pytest_collection_modifyitems(config, items):
    """Run the `pgbouncer` backend only for tests marked `pgbouncer` (it would triple the suite)."""
    kept, dropped = [], []
    for item in items:
        if DRILLS in Path(item.path).parents:  # drills start and kill processes: left out of test-fast
            item.add_marker(pytest.mark.slow)
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("database_url") if callspec else None
        if backend == "pgbouncer" and item.get_closest_marker("pgbouncer") is None:
            dropped.append(item)
        elif backend == "sqlite" and item.get_closest_marker("postgresql_only") is not None:
            dropped.append(item)  # a PostgreSQL matter: deselected on SQLite, never skipped
        elif backend is not None and ONLY_BACKENDS and backend not in ONLY_BACKENDS:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept

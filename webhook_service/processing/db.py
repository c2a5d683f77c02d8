"""Database engine and sessions, kept on the app (no module-level connections)."""

from __future__ import annotations

import functools
import logging
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from webhook_service.core.errors import ConfigError
from webhook_service.processing.bounded import BoundedConnection, DatabaseTimeouts, answer_within

if TYPE_CHECKING:  # Alembic (with Mako and Pygments) loads only to migrate: a third of a worker's start-up
    from alembic.config import Config as AlembicConfig

logger = logging.getLogger(__name__)

#: How long a SQLite writer waits for the lock before failing (dev mode has several threads).
SQLITE_BUSY_TIMEOUT_MS = 30_000
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
#: Reopen pooled PostgreSQL connections older than this (load balancers and servers drop idle ones).
POOL_RECYCLE_SECONDS = 1800
#: A request thread waits at most this long for a pooled connection (then: 503, not a hang).
POOL_TIMEOUT_SECONDS = 5
#: Readiness probes answer within this much, whatever the database does.
PING_TIMEOUT_SECONDS = 2.0


@dataclass
class Database:
    """The engine and session factory of one app."""

    engine: sa.Engine
    sessions: sessionmaker[Session]

    def ping(self, timeout: float = PING_TIMEOUT_SECONDS) -> None:
        """Raise if the database cannot answer a trivial query within `timeout` seconds."""
        with answer_within(timeout), self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def schema_problem(self) -> str | None:
        """What is wrong with the schema for this code (a deploy without its migration), or None."""
        with answer_within(PING_TIMEOUT_SECONDS):
            at = current_revision(self.engine)
        expected = alembic_head()
        return None if at == expected else f"database at migration {at}, this code needs {expected}"

    def dispose_after_fork(self) -> None:
        """Drop pooled connections inherited from a parent process without closing the parent's."""
        self.engine.dispose(close=False)


def is_connection_error(exc: BaseException | None) -> bool:
    """Whether an error says the database is unreachable or not answering (retry later), rather
    than something about the statement itself (a bug, schema drift: retrying will not help).

    Connection-level: psycopg's OperationalError family (lost or refused connections, timeouts
    and cancellations, server shutdown, serialization failures and deadlocks) and InterfaceError,
    a pool with no free connection, SQLite's "database is locked". Everything else from the
    database (ProgrammingError such as an undefined column, IntegrityError, DataError) is not.
    """
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig
    if isinstance(exc, sa.exc.TimeoutError):  # QueuePool: no connection free in time
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return "locked" in str(exc) or "unable to open" in str(exc)
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def lost_connection(exc: BaseException) -> bool:
    """Whether the connection itself went away (dropped, refused, or closed for not answering)."""
    if isinstance(exc, sa.exc.DBAPIError):
        return bool(exc.connection_invalidated)
    return isinstance(exc, sa.exc.TimeoutError)


def _configure_sqlite(engine: sa.Engine) -> None:
    """Make pysqlite transactional (so SAVEPOINT and locking behave) and take the write lock up front."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn):
        # IMMEDIATE: writers queue on the lock instead of failing on upgrade; fine for the embedded default.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_database(
    url: str, session_info: dict | None = None, timeouts: DatabaseTimeouts | None = None
) -> Database:
    """Build the engine for a SQLAlchemy URL; a malformed URL is a ConfigError.

    `session_info` seeds every session's `info` (handlers read their settings from it).
    `timeouts` bound every PostgreSQL wait (bounded.py). Without them (migrations, which may
    legitimately run long) only connecting and TCP are bounded.
    """
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"DATABASE_URL is not a valid SQLAlchemy URL: {exc}") from None
    # Statement errors never carry their parameters (names, emails, payloads): wherever a message
    # travels (a log line, Sentry, an event's error, a test's output) only the SQL does.
    kwargs: dict = {"future": True, "hide_parameters": True}
    if parsed.get_backend_name() == "postgresql":
        # No pool_pre_ping: it costs a round trip on every checkout (~20% of a webhook delivery).
        # A connection the server dropped fails its statement instead; SQLAlchemy then discards the
        # whole pool, the receiver retries once (eventlog.record_event), and other requests get a
        # 503 (errors.py). Recycling bounds how long an idle connection can have been dropped.
        kwargs.update(
            pool_size=5, max_overflow=10, pool_recycle=POOL_RECYCLE_SECONDS, pool_timeout=POOL_TIMEOUT_SECONDS
        )
        # No server-side prepared statements, ever: behind a transaction-pooling PgBouncer (1.18,
        # what hosted PostgreSQL puts in front) each transaction may run on another server
        # connection, where a statement prepared on the last one does not exist. psycopg would
        # otherwise prepare any query run 5 times. Measured cost on a direct connection: none
        # (backend CPU per single-row receiver INSERT, 400 µs either way; docs/operations.md).
        given = set(parsed.query)  # libpq parameters in the URL win over our defaults
        limits = (timeouts or DatabaseTimeouts()).connect_args()
        connect_args = {k: v for k, v in limits.items() if k not in given}
        kwargs["connect_args"] = {**connect_args, "prepare_threshold": None}
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise ConfigError(f"DATABASE_URL {parsed.render_as_string(hide_password=True)!r}: {exc}") from None
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    elif engine.dialect.name == "postgresql" and timeouts is not None:
        _bound_postgres(engine, timeouts)
    return Database(
        engine=engine, sessions=sessionmaker(engine, expire_on_commit=False, info=session_info or {})
    )


def _bound_postgres(engine: sa.Engine, timeouts: DatabaseTimeouts) -> None:
    """Every connection waits a bounded time for answers; every transaction has server-side limits."""
    settings = timeouts.transaction_settings_sql()

    @sa.event.listens_for(engine, "do_connect")
    def _connect(_dialect, _record, cargs, cparams):
        connection = BoundedConnection.connect(*cargs, **cparams)
        connection.answer_timeout = timeouts.answer
        return connection

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn):
        # Transaction-scoped (set_config's `true`): it holds behind a transaction-pooling PgBouncer
        # and leaves nothing behind on the server connection for the next client.
        conn.exec_driver_sql(settings)


def alembic_config(url: str) -> AlembicConfig:
    """An Alembic config pointing at the packaged migrations and the given database."""
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to `revision`, on a connection set up like the service's own."""
    from alembic import command

    engine = create_database(url).engine
    sqlite = engine.dialect.name == "sqlite"
    try:
        with engine.connect() as connection:
            if sqlite:
                # SQLite's procedure for altering a table: foreign keys off (a pragma that only
                # works outside a transaction, hence on the driver's connection), or the table
                # copy a batch migration makes would cascade its DROP into the child rows.
                driver = connection.connection.dbapi_connection
                assert driver is not None  # a checked-out connection always has one
                driver.execute("PRAGMA foreign_keys = OFF")
            cfg = alembic_config(url)
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
            if sqlite:
                _check_foreign_keys(connection)
            connection.commit()
    finally:
        engine.dispose()


def _check_foreign_keys(connection: sa.Connection) -> None:
    """What SQLite did not enforce during the migration, checked before it commits.

    :raises RuntimeError: a row points at one that is not there (the migration is rolled back).
    """
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        tables = sorted({row[0] for row in broken})
        raise RuntimeError(f"migration left rows whose foreign key points nowhere, in: {', '.join(tables)}")


def current_revision(engine: sa.Engine) -> str | None:
    """The migration revision the database is at, or None when it has none."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@functools.cache
def alembic_head() -> str:
    """The newest migration revision shipped with this package."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "the package ships its migrations"
    return head


#: Migration files are `NNNN_what.py` with revision "NNNN", each revising the one before (PLAN).
_MIGRATION_FILE = re.compile(r"^(\d{4})_\w+\.py$")


def schema_head() -> str:
    """`alembic_head()` without loading Alembic, for start-up checks: the highest numbered
    migration file (tests/test_startup.py checks that the two agree)."""
    numbers = [m[1] for p in (MIGRATIONS_DIR / "versions").iterdir() if (m := _MIGRATION_FILE.match(p.name))]
    return max(numbers)


def schema_revision(engine: sa.Engine) -> str | None:
    """`current_revision()` without loading Alembic: the row Alembic keeps in `alembic_version`."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()

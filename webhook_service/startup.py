"""Start-up shared by every process (gunicorn, workers, scheduler, CLI): config, app, checks.

Each failure is one line on stderr and a non-zero exit, so a process with a bad configuration, an
unreachable database or a schema behind the code refuses to start instead of limping. What each
role requires beyond a valid configuration:

- `web` (gunicorn): a webhook secret and `REDIS_URL`. Without Redis each gunicorn process would
  queue into its own in-process Redis that no worker reads; development runs `serve` instead.
  gunicorn checks in its master (`check_web_tier`, from gunicorn.conf.py's `on_starting`), before
  any worker boots: a worker that fails to boot only makes gunicorn spawn another one, forever.
- `worker`, `scheduler`: `REDIS_URL`.
- `serve`: a webhook secret; the embedded queue is allowed (it is the development server).
- commands: a valid configuration; the database is checked by building the app.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal, NoReturn

from webhook_service.core.config import Config, key_mode_conflict, load_config, require_secrets
from webhook_service.core.errors import ConfigError

if TYPE_CHECKING:  # the app stack is imported only when a process builds it (fast `--help`)
    from flask import Flask

    from webhook_service.processing.db import Database

Role = Literal["web", "worker", "scheduler", "serve", "command"]
#: Exit status for a refusal to start.
EXIT_REFUSED = 2
#: gunicorn's "worker failed to boot": a worker exiting with it makes the master stop, not respawn.
EXIT_GUNICORN_WORKER_BOOT_ERROR = 3
#: Set by the gunicorn master once its checks passed; its workers then skip the database checks,
#: so a worker respawned during a database outage boots and answers 503 instead of stopping the server.
_CHECKED_MARK = "WEBHOOK_SERVICE_STARTUP_CHECKED"

logger = logging.getLogger("webhook_service.startup")


def fail(message: str, status: int = EXIT_REFUSED) -> NoReturn:
    """Stop the process with one line on stderr and a non-zero exit status."""
    one_line = " ".join(message.split())  # driver errors span lines; operators get one
    print(f"webhook-service: error: {one_line}", file=sys.stderr, flush=True)
    sys.exit(status)


def load_config_or_exit(*, demo: bool = False) -> Config:
    """Read the environment; a bad value stops the command with one clear line."""
    try:
        return load_config(os.environ, demo=demo)
    except ConfigError as exc:
        fail(str(exc))


def check_role(config: Config, role: Role) -> None:
    """What a role needs beyond a valid configuration (see the module docstring).

    :raises ConfigError: naming what is missing and what to do.
    """
    if role in ("web", "serve"):
        require_secrets(config)
    if config.embedded_queue and role == "web":
        raise ConfigError(
            "REDIS_URL is not set: the web tier needs Redis, or each gunicorn process queues events "
            "into an in-process queue no worker reads (for development, run `webhook-service serve`)"
        )
    if config.embedded_queue and role == "worker":
        raise ConfigError(
            "REDIS_URL is not set: a separate worker needs Redis "
            "(in development, `serve` runs one in-process)"
        )
    if config.embedded_queue and role == "scheduler":
        raise ConfigError(
            "REDIS_URL is not set: the scheduler needs Redis (in development, `serve` runs recovery itself)"
        )
    if role in ("scheduler", "worker") and config.reconcile_time_utc and not config.stripe_api_key:
        raise ConfigError(
            "RECONCILE_TIME is set but STRIPE_API_KEY is not: the daily reconcile reads Stripe's invoices "
            "and customers; set the key on the scheduler and the workers, or unset RECONCILE_TIME"
        )
    if (
        role in ("scheduler", "worker")
        and config.reconcile_time_utc
        and (conflict := key_mode_conflict(config))
    ):
        raise ConfigError(f"RECONCILE_TIME is set, but {conflict}")


def check_database(database: Database, url: str, *, auto_upgrade: bool = False) -> None:
    """The database answers and its schema is at this code's head (dev mode migrates it instead).

    :raises ConfigError: unreachable, or behind (or ahead of) the code's migrations.
    """
    import sqlalchemy as sa

    from webhook_service.processing import db as dbmod

    shown = sa.engine.make_url(url).render_as_string(hide_password=True)
    try:
        database.ping()
    except sa.exc.SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc  # the driver's message, not SQLAlchemy's wrapper
        raise ConfigError(f"cannot connect to DATABASE_URL {shown}: {type(exc).__name__}: {reason}") from None
    if auto_upgrade:
        dbmod.upgrade(url)
        return
    head = dbmod.schema_head()
    current = dbmod.schema_revision(database.engine)
    if current != head:
        raise ConfigError(
            f"database {shown} is at migration {current or 'none'}, expected {head}: "
            "run `webhook-service db upgrade`"
        )


def build_app_or_exit(
    *,
    role: Role = "command",
    require_webhook_secret: bool = False,
    auto_upgrade: bool = False,
    config: Config | None = None,
    check_db: bool = True,
    exit_status: int = EXIT_REFUSED,
    http: bool | None = None,
) -> Flask:
    """Config, role checks, the app and its database checks; each failure one line and `exit_status`.

    :param http: register the endpoints; by default only processes that serve HTTP (`web`,
        `serve`) do. Workers, the scheduler and operator commands use the app's services only.
    """
    try:
        config = config or load_config(os.environ)
        check_role(config, role)
        if require_webhook_secret:
            require_secrets(config)
        # Only now the app stack (a second of imports): a bad configuration is refused without it.
        from webhook_service.web.app import create_app
        from webhook_service.web.services import get_services

        app = create_app(config, http=role in ("web", "serve") if http is None else http)
        if check_db:
            check_database(
                get_services(app).db,
                config.database_url,
                auto_upgrade=auto_upgrade or config.database_url_is_default,
            )
        return app
    except ConfigError as exc:
        fail(str(exc), exit_status)


def check_web_tier(environ: Mapping[str, str] | None = None) -> None:
    """gunicorn's master, before any worker boots: refuse to start (exit 2) on any start-up failure."""
    from webhook_service.processing.db import create_database

    environ = os.environ if environ is None else environ
    try:
        config = load_config(environ)
        check_role(config, "web")
        database = create_database(config.database_url)
        try:
            check_database(database, config.database_url)
        finally:
            database.engine.dispose()  # the master keeps no connections for its workers to inherit
    except ConfigError as exc:
        fail(str(exc))
    os.environ[_CHECKED_MARK] = "1"


def web_app() -> Flask:
    """The app `wsgi.py` serves. Under a gunicorn master that ran `check_web_tier`, the database
    checks are its; otherwise they run here, and a failure exits with gunicorn's boot-error status."""
    return build_app_or_exit(
        role="web",
        check_db=os.environ.get(_CHECKED_MARK) != "1",
        exit_status=EXIT_GUNICORN_WORKER_BOOT_ERROR,
    )


def log_ready(role: Role, **fields: object) -> None:
    """The one line saying a long-running process passed its checks and starts working."""
    logger.info("%s ready", role, extra={"fields": {"role": role, "pid": os.getpid(), **fields}})


def close_clients(app: Flask) -> None:
    """Release the app's database pool and Redis connection."""
    from webhook_service.web.services import get_services

    services = get_services(app)
    services.db.engine.dispose()
    services.queue.connection.close()

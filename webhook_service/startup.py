"""Start-up shared by every process (gunicorn, workers, scheduler, CLI): config, app, checks.

Each failure is one line on stderr and exit status 2, so a process with a bad configuration, an
unreachable database or a schema behind the code refuses to start instead of limping.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import sqlalchemy as sa
from flask import Flask

from webhook_service.core.config import Config, load_config, require_secrets
from webhook_service.core.errors import ConfigError
from webhook_service.processing import db as dbmod
from webhook_service.web.app import create_app
from webhook_service.web.services import get_services


def fail(message: str) -> NoReturn:
    """Stop the process with one line on stderr and exit status 2."""
    one_line = " ".join(message.split())  # driver errors span lines; operators get one
    print(f"webhook-service: error: {one_line}", file=sys.stderr, flush=True)
    sys.exit(2)


def load_config_or_exit(*, demo: bool = False) -> Config:
    """Read the environment; a bad value stops the command with one clear line."""
    try:
        return load_config(os.environ, demo=demo)
    except ConfigError as exc:
        fail(str(exc))
        raise  # unreachable


def check_database(app: Flask, *, auto_upgrade: bool) -> None:
    """Fail fast when the database is unreachable or not migrated (dev mode migrates it itself)."""
    services = get_services(app)
    url = services.config.database_url
    shown = sa.engine.make_url(url).render_as_string(hide_password=True)
    try:
        services.db.ping()
    except sa.exc.SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc  # the driver's message, not SQLAlchemy's wrapper
        raise ConfigError(f"cannot connect to DATABASE_URL {shown}: {type(exc).__name__}: {reason}") from None
    if auto_upgrade:
        dbmod.upgrade(url)
        return
    head = dbmod.alembic_head()
    current = dbmod.current_revision(services.db.engine)
    if current != head:
        raise ConfigError(
            f"database {shown} is at migration {current or 'none'}, expected {head}: "
            "run `webhook-service db upgrade`"
        )


def build_app_or_exit(
    *, require_webhook_secret: bool = False, auto_upgrade: bool = False, config: Config | None = None
) -> Flask:
    """Config, app and start-up checks, each failure one line on stderr and exit status 2."""
    try:
        config = config or load_config(os.environ)
        if require_webhook_secret:
            require_secrets(config)
        app = create_app(config)
        check_database(app, auto_upgrade=auto_upgrade or config.database_url_is_default)
        return app
    except ConfigError as exc:
        fail(str(exc))
        raise  # unreachable


def close_clients(app: Flask) -> None:
    """Release the app's database pool and Redis connection."""
    services = get_services(app)
    services.db.engine.dispose()
    services.queue.connection.close()

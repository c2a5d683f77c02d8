"""The Flask app factory: the receiver, the read API, health and metrics on one database and queue."""

from __future__ import annotations

import logging
import os

from flask import Flask

from handlers.settings import HandlerSettings
from webhook_service.core.config import Config, load_config
from webhook_service.core.logging_setup import configure_logging
from webhook_service.processing.bounded import DatabaseTimeouts
from webhook_service.processing.db import Database, create_database
from webhook_service.processing.enrich import build_fetching
from webhook_service.processing.intake import Intake
from webhook_service.processing.queue import create_queue
from webhook_service.web import services
from webhook_service.web.observability import init_sentry

#: Stripe events are a few KB; a 1 MiB cap keeps a hostile body from tying up a worker.
MAX_BODY_BYTES = 1024 * 1024

logger = logging.getLogger(__name__)


def handler_settings(config: Config) -> HandlerSettings:
    """What the handlers read from the configuration (carried by every session's `info`)."""
    return HandlerSettings(
        entity_type_key=config.entity_type_metadata_key,
        entity_id_key=config.entity_id_metadata_key,
        metered_price_ids=frozenset(config.metered_price_ids),
    )


def database_settings(config: Config) -> tuple[str, HandlerSettings, DatabaseTimeouts]:
    """All that the app's database depends on in the configuration (equal settings, equal databases)."""
    return config.database_url, handler_settings(config), DatabaseTimeouts.from_config(config)


def database_for(config: Config) -> Database:
    """The app's database: its engine, bounded by the configured timeouts, and sessions that carry
    the handlers' settings.

    :raises ConfigError: DATABASE_URL is malformed.
    """
    url, settings, timeouts = database_settings(config)
    return create_database(url, {"handler_settings": settings}, timeouts)


def build_services(config: Config, database: Database) -> services.Services:
    """The app's clients on `database`: a queue, the receiver's intake and Stripe access."""
    queue = create_queue(config.redis_url, config.queue_name, config.retry_intervals)
    return services.Services(
        config=config,
        db=database,
        queue=queue,
        intake=Intake(database.engine, queue, max_inside=config.web_threads - 1),
        fetching=build_fetching(config, queue.connection),
    )


def create_app(config: Config | None = None, *, http: bool = True, database: Database | None = None) -> Flask:
    """Build the Flask app with its database, queue and blueprints.

    :param config: a validated Config; read from the environment when omitted.
    :param http: register the endpoints (receiver, API, health, metrics). Workers and the
        scheduler only need the app's services and context, and start faster without them.
    :param database: `database_for(config)`, built earlier, for a process that builds several
        apps of one configuration (the tests): SQLAlchemy keeps its compiled statements and its
        dialect set-up per engine, so a new engine per app compiles every statement again.
    :raises ConfigError: configuration is malformed.
    """
    config = config or load_config(os.environ)
    configure_logging(config.log_level)
    init_sentry(config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    services.init_app(app, build_services(config, database or database_for(config)))
    if http:
        from webhook_service.web import api, console, error_handlers, health, metrics, receiver, rejections

        app.register_blueprint(receiver.bp)
        app.register_blueprint(health.bp)
        app.register_blueprint(metrics.bp)
        rejections.init_app(app)
        api.init_app(app)
        console.init_app(app, config.console_session_key)
        error_handlers.register_error_handlers(app)  # after the API: flask-smorest installs its own
    if config.embedded_queue:
        logger.warning("dev mode: REDIS_URL is unset, using the in-process queue; not for production")
    if config.database_url_is_default:
        logger.warning("dev mode: DATABASE_URL is unset, using SQLite at %s", config.database_url)
    return app

"""The per-app bundle of clients (config, database, queue, Stripe), kept in `app.extensions`."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from webhook_service.core.config import Config
from webhook_service.processing.db import Database
from webhook_service.processing.enrich import Fetching
from webhook_service.processing.intake import Intake
from webhook_service.processing.queue import EventQueue

EXTENSION_KEY = "webhook_service"


@dataclass
class Services:
    """What request handlers, jobs and commands need, built once by the factory."""

    config: Config
    db: Database
    queue: EventQueue
    intake: Intake
    #: Stripe API access for the worker and resync; None without STRIPE_API_KEY.
    fetching: Fetching | None = None


def init_app(app: Flask, services: Services) -> None:
    """Attach the services to the app."""
    app.extensions[EXTENSION_KEY] = services


def get_services(app: Flask | None = None) -> Services:
    """The services of the given app, or of the current one."""
    return (app or current_app).extensions[EXTENSION_KEY]

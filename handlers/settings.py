"""The few choices handlers need from configuration, passed in the session's `info`.

Handlers stay plain functions of (event, session): the app puts a HandlerSettings into its
sessionmaker's info, and handlers read it with `settings_of(session)`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

ENTITY_TYPES = ("organization", "company")


@dataclass(frozen=True)
class HandlerSettings:
    """Which customer metadata keys type and link the portal's billable entity, and which prices
    are metered when a payload does not say (METERED_PRICE_IDS)."""

    entity_type_key: str = "entity_type"
    entity_id_key: str = "portal_entity_id"
    default_entity_type: str = "organization"
    metered_price_ids: frozenset[str] = frozenset()


DEFAULT_SETTINGS = HandlerSettings()


def settings_of(session: Session) -> HandlerSettings:
    """The settings the session was made with, or the defaults."""
    return session.info.get("handler_settings") or DEFAULT_SETTINGS

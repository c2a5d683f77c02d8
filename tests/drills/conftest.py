"""Fixtures of the process drills (tests/drills/stack.py has the helpers)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.conftest import clean_tables


@pytest.fixture
def direct(postgresql_database_url):
    """The test PostgreSQL, reached directly (never through a fault), emptied first."""
    engine = sa.create_engine(postgresql_database_url)
    clean_tables(engine)
    yield engine
    engine.dispose()

"""Scratch PostgreSQL databases for the bench scripts: made for one run, dropped after it.

Every script measures on a database of its own (never one a person uses), on the machine's
PostgreSQL unless BENCH_PG_ADMIN_URL names another server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import sqlalchemy as sa

ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://root@127.0.0.1:5432/test")


def create_database(prefix: str, *, migrate: bool = True, template: str | None = None) -> str:
    """A new database named `whs_bench_<prefix>_<pid>_<random>`; its SQLAlchemy URL (psycopg 3).

    `migrate` runs the service's migrations; `template` copies a database instead (CREATE … TEMPLATE).
    """
    name = f"whs_bench_{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{copy}')
    url = sa.engine.make_url(ADMIN_URL).set(drivername="postgresql+psycopg", database=name)
    rendered = url.render_as_string(hide_password=False)
    if migrate and not template:
        from webhook_service.processing.db import upgrade

        upgrade(rendered)
    return rendered


def drop_database(url: str) -> None:
    """Drop the database `url` names, closing whatever still uses it."""
    name = sa.engine.make_url(url).database
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def scratch_database(prefix: str, **options) -> Iterator[str]:
    """`create_database`, dropped when the block ends however it ends."""
    url = create_database(prefix, **options)
    try:
        yield url
    finally:
        drop_database(url)

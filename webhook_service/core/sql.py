"""SQL that must read the same on PostgreSQL and SQLite."""

from __future__ import annotations

from sqlalchemy.dialects import postgresql, sqlite


def dialect_insert(dialect_name: str, table):
    """An INSERT that supports ON CONFLICT on both supported databases."""
    if dialect_name == "postgresql":
        return postgresql.insert(table)
    if dialect_name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"unsupported database dialect {dialect_name!r}")

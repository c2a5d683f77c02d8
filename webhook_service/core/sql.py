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


def starts_with(column, prefix: str, dialect: str):
    """`column LIKE 'prefix%'` that PostgreSQL can answer from a `varchar_pattern_ops` index.

    SQLAlchemy's `startswith(autoescape=True)` adds `ESCAPE '/'`, which PostgreSQL plans as a
    function of the pattern: no index, a scan of every row. Backslash is PostgreSQL's default
    escape, so escaping with it keeps the pattern a plain constant. SQLite has no default escape.
    """
    if dialect != "postgresql":
        return column.startswith(prefix, autoescape=True)
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(escaped + "%")

"""Bounded waits on PostgreSQL: no call waits forever for a server that stopped answering.

A silent partition (packets dropped, nobody told) leaves a socket open and quiet: without these
bounds a request, a drain or a pool reset waits on it for as long as the kernel keeps the
connection (minutes to hours), holding its thread, and on the server its row locks.
Three layers, because each covers what the others cannot see:
- libpq: `connect_timeout` for the whole connection set-up; TCP keepalives and `tcp_user_timeout`
  so the kernel itself drops a connection whose peer vanished (idle or with unacknowledged data);
- the server: `statement_timeout` and `idle_in_transaction_session_timeout`, set per transaction
  with `set_config(..., true)` (transaction-scoped, so it holds behind a transaction-pooling
  PgBouncer, which neither passes startup `options` on nor keeps a session's `SET`); the second
  is what frees the row locks of a client that vanished mid-transaction;
- the client: every wait for an answer is bounded (`BoundedConnection.wait`), a little longer
  than the server's own limit so that the server normally speaks first; past it the connection is
  closed (SQLAlchemy then discards it) and the caller gets an OperationalError. This is what
  bounds a wait when the network path is healthy but nothing comes back (a stalled proxy or
  PgBouncer, a wedged server).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
from psycopg import errors as pg_errors

from webhook_service.core.config import Config

#: The client waits this much longer than the server's statement_timeout before giving up itself.
CLIENT_GRACE_SECONDS = 2.0

_override = threading.local()


@dataclass(frozen=True)
class DatabaseTimeouts:
    """How long PostgreSQL calls may take (seconds); see docs/operations.md."""

    connect: float = 3.0
    statement: float = 10.0
    idle_in_transaction: float = 30.0
    #: TCP: keepalive probes start after this much idle time, then every `keepalive_interval`,
    #: `keepalive_count` times; unacknowledged data is given up on after `tcp_user_timeout`.
    keepalive_idle: int = 10
    keepalive_interval: int = 5
    keepalive_count: int = 3
    tcp_user_timeout: float = 10.0

    @classmethod
    def from_config(cls, config: Config) -> DatabaseTimeouts:
        return cls(
            connect=config.database_connect_timeout,
            statement=config.database_statement_timeout,
            idle_in_transaction=config.database_idle_in_transaction_timeout,
        )

    @property
    def answer(self) -> float:
        """The client's own bound on any wait for the server."""
        return self.statement + CLIENT_GRACE_SECONDS

    def connect_args(self) -> dict[str, object]:
        """libpq parameters; a parameter given in DATABASE_URL's query string takes precedence."""
        return {
            "connect_timeout": max(1, round(self.connect)),
            "keepalives": 1,
            "keepalives_idle": self.keepalive_idle,
            "keepalives_interval": self.keepalive_interval,
            "keepalives_count": self.keepalive_count,
            "tcp_user_timeout": int(self.tcp_user_timeout * 1000),
        }

    def transaction_settings_sql(self) -> str:
        """One statement setting the server-side limits for the current transaction only."""
        return (
            f"SELECT set_config('statement_timeout', '{int(self.statement * 1000)}', true), "
            "set_config('idle_in_transaction_session_timeout', "
            f"'{int(self.idle_in_transaction * 1000)}', true)"
        )


@contextlib.contextmanager
def answer_within(seconds: float) -> Iterator[None]:
    """Within this block, this thread waits at most `seconds` for any answer from PostgreSQL.

    For callers with a tighter budget than a whole statement_timeout: the receiver (Stripe gets a
    503 within 10 s), readiness probes.
    """
    previous = getattr(_override, "seconds", None)
    _override.seconds = seconds
    try:
        yield
    finally:
        _override.seconds = previous


class BoundedConnection(psycopg.Connection):
    """A psycopg connection whose every wait for the server ends after `answer_timeout` seconds."""

    answer_timeout: float | None = None

    def wait(self, gen, interval=0.1, timeout=None):
        limit = timeout if timeout is not None else getattr(_override, "seconds", None) or self.answer_timeout
        try:
            return super().wait(gen, interval=interval, timeout=limit)
        except pg_errors._WaitTimeout:
            # Mid-protocol, the connection's state is unknown: drop it (SQLAlchemy sees it closed
            # and discards it). The server ends its side by its own timeouts.
            self.pgconn.finish()
            raise psycopg.OperationalError(
                f"no answer from the database within {limit:g} s; connection closed"
            ) from None

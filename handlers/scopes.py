"""Which Stripe mode and account an event's objects belong to, and keeping them apart.

Every mirrored row carries `livemode` and `account` (null for the platform's own objects). Object
ids are unique across Stripe accounts and modes (docs/design.md, "Modes, accounts and
currencies"), so a row keeps the id as its key; an event that names a row of another mode or
account is refused, never merged into it.
"""

from __future__ import annotations

from dataclasses import dataclass

from webhook_service.core.errors import PermanentEventError

#: Longest Connect account id a row can hold (the column's length).
MAX_ACCOUNT_LENGTH = 255


@dataclass(frozen=True)
class Scope:
    """Test or live mode, and the Connect account (None: the platform itself)."""

    livemode: bool
    account: str | None

    def describe(self) -> str:
        mode = "live" if self.livemode else "test"
        return f"{'the platform' if self.account is None else 'account ' + self.account} ({mode} mode)"


def event_scope(event: dict) -> Scope:
    """The mode and account of an event's objects, from its envelope.

    :raises PermanentEventError: `account` is present but not an account id.
    """
    account = event.get("account")
    if account is not None and (
        not isinstance(account, str) or not account or len(account) > MAX_ACCOUNT_LENGTH
    ):
        raise PermanentEventError(f"account: expected a Connect account id, got {type(account).__name__}")
    livemode = event.get("livemode")
    if not isinstance(livemode, bool):
        livemode = ((event.get("data") or {}).get("object") or {}).get("livemode") is True
    return Scope(livemode, account)


def row_scope(row) -> Scope:
    """The scope a mirrored row holds."""
    return Scope(bool(row.livemode), row.account)


def claim(row, what: str, scope: Scope, *, established: bool) -> None:
    """Give a row the event's scope, or refuse an event from another mode or account.

    :param established: the row already holds an object (not a stub made for a lock).
    :raises PermanentEventError: the row belongs to another mode or account.
    """
    held = row_scope(row)
    if established and held != scope:
        raise PermanentEventError(
            f"{what} {row.id} belongs to {held.describe()}, the event is from {scope.describe()}; "
            "Stripe ids are unique across accounts, so one of them is wrong"
        )
    row.livemode, row.account = scope.livemode, scope.account


def copy_scope(row, scope: Scope) -> None:
    """Set a dependent row's (line, ledger row, balance, notification) scope from its parent's."""
    if (row.livemode, row.account) != (scope.livemode, scope.account):
        row.livemode, row.account = scope.livemode, scope.account

"""The audit trail of operator actions: who did what, when, with which parameters and outcome.

Each write action (replay, resync, pause, resume, prune, console actions) records its own row,
in the same transaction as its change where it has one, so the trail cannot miss an action that
took effect. Rows are never deleted by the service; the one exception to "never updated" is a
long action that may be killed (backfill): its row is written when it starts (`start_action`,
outcome `{"state": "started"}`) and completed when it ends (`finish_action`), so a SIGKILLed run
still leaves a row saying who started what, and when.
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webhook_service.core.models import OperatorAction, utcnow
from webhook_service.processing.db import Database

#: Ids beyond this many are summarised by their count (an action on 100,000 events stays one small row).
MAX_IDS_RECORDED = 100


def default_actor() -> str:
    """`cli:<OS user>`: who runs a command when no `--actor` names them."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers) and no LOGNAME/USER
        user = "unknown"
    return f"cli:{user}"


def ids_parameter(ids) -> dict:
    """Ids for `parameters`: all of them up to MAX_IDS_RECORDED, then the first ones and the count."""
    ids = list(ids)
    if len(ids) <= MAX_IDS_RECORDED:
        return {"ids": ids}
    return {"ids": ids[:MAX_IDS_RECORDED], "ids_total": len(ids)}


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    parameters: Mapping | None = None,
    result: Mapping | None = None,
) -> OperatorAction:
    """Add an audit row in the caller's transaction (the caller commits)."""
    row = OperatorAction(
        at=utcnow(),
        actor=actor[:255],
        action=action[:64],
        parameters=_jsonable(parameters or {}),
        result=_jsonable(result) if result is not None else None,
    )
    session.add(row)
    return row


def record_action(
    db: Database,
    *,
    actor: str,
    action: str,
    parameters: Mapping | None = None,
    result: Mapping | None = None,
) -> None:
    """Add an audit row in a transaction of its own (for actions that span many transactions)."""
    with db.sessions() as session, session.begin():
        record(session, actor=actor, action=action, parameters=parameters, result=result)


def start_action(db: Database, *, actor: str, action: str, parameters: Mapping | None = None) -> int:
    """Record that a long action started, in a transaction of its own; returns the row's id."""
    with db.sessions() as session, session.begin():
        row = record(session, actor=actor, action=action, parameters=parameters, result={"state": "started"})
        session.flush()
        return row.id


def finish_action(db: Database, action_id: int, result: Mapping) -> None:
    """Complete a `start_action` row with the action's outcome."""
    with db.sessions() as session, session.begin():
        row = session.get(OperatorAction, action_id)
        if row is not None:
            row.result = _jsonable(result)


def list_actions(
    db: Database,
    *,
    limit: int = 50,
    offset: int = 0,
    action: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> tuple[list[OperatorAction], int]:
    """Audit rows newest first, and how many match in all."""
    stmt = sa.select(OperatorAction)
    if action:
        stmt = stmt.where(OperatorAction.action == action)
    if actor:
        stmt = stmt.where(OperatorAction.actor == actor)
    if since:
        stmt = stmt.where(OperatorAction.at >= since)
    if until:
        stmt = stmt.where(OperatorAction.at < until)
    with db.sessions() as session:
        total = session.scalar(sa.select(sa.func.count()).select_from(stmt.subquery())) or 0
        rows = session.scalars(
            stmt.order_by(OperatorAction.at.desc(), OperatorAction.id.desc()).limit(limit).offset(offset)
        ).all()
    return list(rows), total


def _jsonable(value):
    """Dates as ISO strings, tuples as lists: what a JSON column can hold."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)

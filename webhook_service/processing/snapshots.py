"""Objects fetched from Stripe's API, recorded as events so they take the events' own path.

`backfill` and `reconcile --repair` do not write the mirror themselves: each object they fetch
becomes a synthetic event in the event log (`<source>_<object id>_<run tag>`, of type
`<object>.updated`, marked with `_fetched_at`, the second it was fetched) and a drain applies it
through the same readings, handlers and ordering rules as a webhook. A fetched snapshot is an
observation of the second it was fetched (handlers/ordering.py), so it never overwrites a newer
webhook, and a webhook created after the fetch outranks it (docs/design.md §7).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from handlers.ordering import FETCHED_AT
from webhook_service.core.errors import InvalidPayload
from webhook_service.processing import eventlog
from webhook_service.processing.db import Database
from webhook_service.processing.envelope import MAX_EVENT_ID_LENGTH, parse_envelope
from webhook_service.processing.queue import EventQueue

#: The event type a fetched object of each kind is recorded as.
EVENT_TYPE_OF = {
    "invoice": "invoice.updated",
    "credit_note": "credit_note.updated",
    "customer": "customer.updated",
}
#: Events recorded per database round trip.
CHUNK = 100
#: The commands whose fetched objects are logged as events (the `<source>_` of their ids): none
#: of those events is a delivery, which /readyz's signature check counts.
BACKFILL, RECONCILE = "backfill", "reconcile"
SOURCES = (BACKFILL, RECONCILE)


@dataclass
class SnapshotReport:
    """What recording a batch of fetched objects did."""

    recorded: int = 0
    duplicates: int = 0
    #: Objects the event log would not take (no id, an unknown kind): event id or object → reason.
    refused: dict[str, str] = field(default_factory=dict)
    ignored: int = 0


def snapshot_event(
    obj: dict,
    *,
    source: str,
    run: int | str,
    fetched_at: int,
    account: str | None = None,
    api_version: str | None = None,
) -> dict:
    """The synthetic event that carries `obj` as fetched at `fetched_at`.

    The id depends on the object and `run` (the run's tag: a backfill's start second, a reconcile
    run's start second and number) only, so recording the same object twice in one run (a resumed
    backfill re-reading its last page) is a duplicate, not a second snapshot. An object
    id too long for the event log's key is replaced there by its digest (`data.object` keeps it).
    """
    assert source in SOURCES, source
    kind = str(obj.get("object"))
    event_id = f"{source}_{obj.get('id')}_{run}"
    if len(event_id) > MAX_EVENT_ID_LENGTH:
        digest = hashlib.sha256(str(obj.get("id")).encode()).hexdigest()[:40]
        event_id = f"{source}_sha256-{digest}_{run}"
    return {
        "object": "event",
        "id": event_id,
        "type": EVENT_TYPE_OF.get(kind, f"{kind}.updated"),
        "created": fetched_at,
        FETCHED_AT: fetched_at,
        "livemode": obj.get("livemode") is True,
        "account": account,
        "api_version": api_version,
        "data": {"object": obj},
    }


def record_snapshots(
    db: Database,
    queue: EventQueue | None,
    events: Iterable[dict],
    *,
    accept_mode: str = "any",
    dry_run: bool = False,
) -> SnapshotReport:
    """Record synthetic events (from `snapshot_event`) once each and wake a drain for them."""
    report = SnapshotReport()
    chunk: list[tuple] = []
    for event in events:
        body = orjson.dumps(event)
        try:
            envelope = parse_envelope(body, accept_mode)
        except InvalidPayload as exc:
            report.refused[str(event.get("id"))] = str(exc)
            continue
        chunk.append((envelope, body))
        if len(chunk) >= CHUNK:
            _record(db, chunk, report, dry_run)
            chunk = []
    _record(db, chunk, report, dry_run)
    if report.recorded and not dry_run and queue is not None:
        queue.request_drain()
    return report


def _record(db: Database, chunk: list[tuple], report: SnapshotReport, dry_run: bool) -> None:
    if not chunk:
        return
    if dry_run:
        report.recorded += len(chunk)
        return
    for (envelope, _body), new in zip(chunk, eventlog.record_events(db.engine, chunk), strict=True):
        if not new:
            report.duplicates += 1
        elif envelope.ignored_reason:
            report.ignored += 1
        else:
            report.recorded += 1

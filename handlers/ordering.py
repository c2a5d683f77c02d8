"""Which snapshot of an object is newest when `created` (whole seconds) cannot tell.

A row keeps the snapshot with the greatest *prefix* (status rank, the second it was observed,
signs of progress). Snapshots whose prefixes tie are told apart by evidence, never by event id:
one whose `previous_attributes` equal another's values records the change away from it, so it
came after it. The winner of a tie is computed from every logged snapshot with that prefix, so
it depends on the set of events, not on the order they were processed in. Where the evidence
leaves several candidates, the worker (with an API key) fetches the object, which then outranks
them as a later observation (`FETCHED_AT`); without a key, the candidate with the greatest content
hash wins: arbitrary, but the same in any delivery order (docs/design.md §4).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import sqlalchemy as sa
from sqlalchemy.orm import Session

from handlers.readings import read_event
from webhook_service.core.errors import PermanentEventError
from webhook_service.core.models import EventStatus, StripeEvent
from webhook_service.core.values import is_deletion_stub

#: Set by the worker on an event whose `data.object` it fetched from Stripe: the Unix second of the
#: fetch. The snapshot is then an observation of that second, not of the event's `created`.
FETCHED_AT = "_fetched_at"
#: Set by the worker when the fetch found the object deleted (Stripe answers `{id, object,
#: deleted}`): the Unix second of that fetch. The event keeps its own snapshot, which handlers
#: order as usual, and the object is marked deleted as of that second at the latest.
GONE_AT = "_gone_at"

PrefixOf = Callable[[dict], str]


def gone_at(event: dict) -> int | None:
    """The second a fetch found the event's object deleted, if one did (`GONE_AT`)."""
    value = event.get(GONE_AT)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def observed_second(event: dict) -> int:
    """The second a snapshot shows the object at: the fetch's, else the event's `created`."""
    for value in (event.get(FETCHED_AT), event.get("created")):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0


def fetched_in_memory(event: dict) -> bool:
    """The worker fetched this event's object after the event was created (processing/enrich.py):
    an observation newer than anything of its second, which wins a tie outright.

    A snapshot that backfill or reconcile logged as its own event (processing/snapshots.py) has
    `created` equal to its fetch second: the log holds it like a webhook, so a tie with it is
    ranked by the same evidence as any other, and the result cannot depend on which ran first.
    """
    fetched, created = event.get(FETCHED_AT), event.get("created")
    return isinstance(fetched, int) and (not isinstance(created, int) or fetched > created)


def came_after(later: dict, earlier: dict) -> bool:
    """True when `later` records a change away from `earlier`'s values (its previous_attributes)."""
    previous = (later.get("data") or {}).get("previous_attributes")
    if not isinstance(previous, dict) or not previous:
        return False
    before, after = earlier["data"]["object"], later["data"]["object"]
    return _matches(previous, before) and not _matches(previous, after)


def _matches(previous: dict, obj) -> bool:
    if not isinstance(obj, dict):
        return False
    for key, value in previous.items():
        if isinstance(value, dict) and isinstance(obj.get(key), dict):
            if not _matches(value, obj[key]):
                return False
        elif obj.get(key) != value:
            return False
    return True


def _depths(snapshots: list[dict]) -> list[int]:
    """Length of the longest evidence chain ending at each snapshot (mutual evidence is ignored)."""
    n = len(snapshots)
    after = [
        [j for j in range(n) if j != i and came_after(snapshots[i], snapshots[j])
         and not came_after(snapshots[j], snapshots[i])]
        for i in range(n)
    ]  # fmt: skip
    memo: dict[int, int] = {}

    def depth(i: int, path: frozenset[int]) -> int:
        if i in memo:
            return memo[i]
        result = max((1 + depth(j, path | {i}) for j in after[i] if j not in path), default=0)
        memo[i] = result
        return result

    return [depth(i, frozenset()) for i in range(n)]


def content_hash(event: dict) -> str:
    """A digest of the snapshot itself (key order does not matter)."""
    return hashlib.sha256(orjson.dumps(event["data"]["object"], option=orjson.OPT_SORT_KEYS)).hexdigest()


def newest(snapshots: list[dict]) -> dict:
    """The newest of snapshots whose prefixes tie: by evidence, then by content.

    The event id only orders snapshots with identical content (Stripe's duplicate Event objects),
    so it decides which id is recorded as the source, never what is mirrored.
    """
    depths = _depths(snapshots)
    return max(zip(depths, snapshots, strict=True), key=lambda d: (d[0], content_hash(d[1]), d[1]["id"]))[1]


def is_settled(snapshots: list[dict]) -> bool:
    """True when evidence alone names the newest (or every candidate shows the same object)."""
    if len(snapshots) < 2:
        return True
    depths = _depths(snapshots)
    top = max(depths)
    candidates = {content_hash(s) for s, d in zip(snapshots, depths, strict=True) if d == top}
    return len(candidates) == 1


def key_prefix(key: str | None) -> str:
    """The comparable part of a stored version key (`<prefix>.<event id>`)."""
    return (key or "").rsplit(".", 1)[0] if key else ""


#: session.info keys: logged snapshots by (family, object id, second), and a batch's keys not read yet.
_SNAPSHOTS = "same_second_snapshots"
_EXPECTED = "same_second_expected"
#: Object-and-second keys per read of the log (bounds each statement's parameters).
READ_CHUNK = 500

Key = tuple[str, str, int]


def _key(event: dict, family: str) -> Key | None:
    obj = (event.get("data") or {}).get("object")
    obj_id = obj.get("id") if isinstance(obj, dict) else None
    created = event.get("created")
    if not isinstance(obj_id, str) or not isinstance(created, int) or isinstance(created, bool):
        return None
    return family, obj_id, created


def expect_ties(session: Session, family: str, events: list[dict]) -> None:
    """Note a batch's events (logged, claimed, read by `family`'s reading) before its handlers run.

    The first tie any of them meets then reads the log once for every object and second of the
    batch, and takes the batch's own snapshots as they are instead of reading them again: one
    query per batch with ties instead of one per tie, and none without ties. Only for events
    whose log rows the transaction holds and that are not failed (they take part, as when read).
    """
    expected: dict[Key, list[dict]] = session.info.setdefault(_EXPECTED, {})
    for event in events:
        key = _key(event, family)
        if key is not None:
            expected.setdefault(key, []).append(event)


def same_prefix_snapshots(session: Session, event: dict, family: str, prefix_of: PrefixOf) -> list[dict]:
    """Every logged snapshot of this event's object with its prefix, with the event itself in it.

    Reads the event log (the durable copy of every accepted event), so events of the same
    second in other batches, processed or not, take part; only events of that second are read.
    The event takes part as logged (and read), not as the worker completed it (lines paged,
    prices looked up): the comparison must see the same content whichever event is the current.
    """
    key = _key(event, family)
    if key is None:
        return [event]
    cache: dict[Key, list[dict]] = session.info.setdefault(_SNAPSHOTS, {})
    if key not in cache:  # one read per object and second in a transaction (a batch shares it)
        expected: dict[Key, list[dict]] = session.info.pop(_EXPECTED, {})
        expected.setdefault(key, [])
        _read_logged(session, {k: v for k, v in expected.items() if k not in cache}, cache)
    prefix = prefix_of(event)
    same = [e for e in cache[key] if prefix_of(e) == prefix]
    own = next((e for e in same if e.get("id") == event["id"]), event)
    # Stripe's deletion stub (`{id, object, deleted}`, logged by a repair) is no snapshot: it says
    # only that the object is gone, and must never win a tie and be mirrored as its values.
    others = [e for e in same if e.get("id") != event["id"] and not is_deletion_stub(e["data"]["object"])]
    return [own, *others]


def _read_logged(session: Session, wanted: dict[Key, list[dict]], cache: dict[Key, list[dict]]) -> None:
    """Fill `cache` for `wanted` keys: the snapshots given with them plus the others the log holds."""
    by_family: dict[str, list[Key]] = {}
    for key in wanted:
        by_family.setdefault(key[0], []).append(key)
    for family, keys in by_family.items():
        for start in range(0, len(keys), READ_CHUNK):
            chunk = keys[start : start + READ_CHUNK]
            known = [e for key in chunk for e in wanted[key]]
            for key in chunk:
                cache[key] = list(wanted[key])
            # No autoflush: the read needs only logged payloads, which the batch never changes, and
            # a flush per read wrote the batch's dirty rows once per tie (most of a drain's time).
            with session.no_autoflush:
                rows = session.execute(
                    # Objects and seconds as two lists, a superset the loop below narrows: as fast
                    # as one index scan per object, where a list of pairs cost PostgreSQL 5x more.
                    sa.select(StripeEvent.object_id, StripeEvent.created, StripeEvent.payload).where(
                        StripeEvent.object_id.in_(sorted({obj_id for _, obj_id, _ in chunk})),
                        StripeEvent.created.in_(
                            [datetime.fromtimestamp(second, UTC) for second in sorted({k[2] for k in chunk})]
                        ),
                        StripeEvent.type.like(f"{family}.%"),
                        StripeEvent.status != EventStatus.FAILED.value,  # malformed ones never take part
                        StripeEvent.id.not_in([e["id"] for e in known]),
                    )
                ).all()
            for obj_id, created, payload in rows:
                group = cache.get((family, obj_id or "", int(created.timestamp()))) if created else None
                if group is not None and (readable := _readable(payload, family)) is not None:
                    group.append(readable)


def _readable(payload: str, family: str) -> dict | None:
    """A logged snapshot as its declared reading returns it, or None if it cannot be read (one
    not yet refused by its own attempt must not decide, nor be mirrored, for another)."""
    try:
        return read_event(orjson.loads(payload), family)
    except PermanentEventError:
        return None


def winner(
    session: Session, event: dict, stored_key: str | None, family: str, prefix_of: PrefixOf
) -> tuple[dict, str] | None:
    """What the row should hold after `event`: (snapshot, its version key), or None to keep the row.

    A greater prefix wins outright; a smaller one loses. On a tie the newest logged snapshot of that
    prefix wins, which may be the stored one (None), this event, or another logged event.
    """
    prefix = prefix_of(event)
    stored = key_prefix(stored_key)
    if prefix < stored:
        return None
    if prefix > stored or fetched_in_memory(event):
        return event, f"{prefix}.{event['id']}"
    group = same_prefix_snapshots(session, event, family, prefix_of)
    stored_id = stored_key.rsplit(".", 1)[-1] if stored_key else None
    if stored_id and stored_id != event["id"] and all(e["id"] != stored_id for e in group):
        # The row's snapshot is not in the log (pruned, or applied without it): it stays unless
        # this one records a change, the only evidence left.
        changed = (event.get("data") or {}).get("previous_attributes")
        return (event, f"{prefix}.{event['id']}") if changed else None
    best = newest(group)
    if best["id"] == event["id"]:
        best = event  # as the worker completed it
    if best["id"] != event["id"] and best["id"] == stored_id:
        return None  # the row already holds the newest
    return best, f"{prefix}.{best['id']}"

"""Group commit: threads that need the same kind of write at the same time share one.

A webhook delivery's cost is mostly its commit and its round trips, not its own work. When several
requests of one process arrive together, the first to find no write in flight becomes the leader
and writes for everyone pending; the others wait for that write's outcome, and the first of those
still waiting when it ends leads the next one. There is no extra thread (the leader is a request
thread that would have waited on the database anyway), and a request that arrives alone is written
at once, so latency at low load does not change.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Slot(Generic[Item, Result]):
    __slots__ = ("item", "done", "lead", "result", "error")

    def __init__(self, item: Item):
        self.item = item
        self.done = threading.Event()
        self.lead = False
        self.result: Result | None = None
        self.error: BaseException | None = None


class GroupCommitter(Generic[Item, Result]):
    """Run `write(items)` for items submitted concurrently; each submitter gets its own outcome.

    `write` returns one entry per item, in order: a result, or an exception instance to raise in
    that item's thread. If `write` itself raises, every item of the group raises it.
    """

    def __init__(
        self, write: Callable[[Sequence[Item]], Sequence[Result | BaseException]], max_group: int = 32
    ):
        self._write = write
        self._max_group = max_group
        self._lock = threading.Lock()
        self._pending: list[_Slot[Item, Result]] = []
        self._writing = False  # invariant: when False, nothing is pending

    def submit(self, item: Item, timeout: float | None = None) -> Result:
        """Write `item` together with whatever else is pending; return its result or raise its error.

        :param timeout: the longest this call waits for another thread's write to carry its item
            (its own write, when it leads, is bounded by the write function).
        :raises GroupWaitTimeout: waited `timeout` seconds; the item may still be written later.
        """
        slot: _Slot[Item, Result] = _Slot(item)
        with self._lock:
            self._pending.append(slot)
            slot.lead = not self._writing
            self._writing = True
        if not slot.lead and not slot.done.wait(timeout):
            self._withdraw(slot)
        if slot.lead:
            self._lead()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _withdraw(self, slot: _Slot[Item, Result]) -> None:
        """Give up waiting: leave the queue (passing on the lead if it was just handed over)."""
        successor = None
        with self._lock:
            if slot.done.is_set():
                return  # its outcome, or the lead, arrived just now
            if slot in self._pending:
                self._pending.remove(slot)
                if slot.lead:  # chosen to lead the next write, not yet woken: hand it on
                    slot.lead = False
                    successor = self._pending[0] if self._pending else None
                    if successor is None:
                        self._writing = False
                    else:
                        successor.lead = True
            # else: its item is in the write in flight, which may still succeed without it
        if successor is not None:
            successor.done.set()
        raise GroupWaitTimeout("waited too long for the group's write")

    def _lead(self) -> None:
        with self._lock:
            group = self._pending[: self._max_group]
            del self._pending[: self._max_group]
        try:
            outcomes = self._write([slot.item for slot in group])
            if len(outcomes) != len(group):
                raise RuntimeError(f"group write returned {len(outcomes)} outcomes for {len(group)} items")
        except BaseException as exc:  # noqa: BLE001 - every waiter must wake up, whatever happened
            outcomes = [exc] * len(group)
        for slot, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                # Each thread raises its own copy, caused by the original: one exception object
                # raised in several threads would have its traceback rewritten under the others.
                slot.error = _own_copy(outcome)
            else:
                slot.result = outcome
            slot.lead = False
        with self._lock:
            successor = self._pending[0] if self._pending else None
            if successor is None:
                self._writing = False
            else:
                successor.lead = True
        for slot in group:
            slot.done.set()
        if successor is not None:
            successor.done.set()


class GroupWaitTimeout(Exception):
    """Raised in a submitter's thread that waited longer than its timeout for another's write."""


class GroupWriteError(Exception):
    """Raised in a submitter's thread when the group's error could not be copied."""


def _own_copy(error: BaseException) -> BaseException:
    try:
        mine = copy.copy(error)
    except Exception:  # noqa: BLE001 - an exception class whose constructor copy cannot replay
        mine = GroupWriteError(f"{type(error).__name__}: {error}")
    mine.__cause__ = error
    return mine

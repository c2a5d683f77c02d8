"""Group commit: concurrent submitters share writes, and each gets exactly its own outcome."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from webhook_service.processing.group_commit import GroupCommitter


class GatedWriter:
    """A write function whose first call waits until `hold` submitters are queued behind it."""

    def __init__(self, committer_ref: list, hold: int):
        self.groups: list[list] = []
        self._committer_ref = committer_ref
        self._hold = hold

    def __call__(self, items):
        if not self.groups:  # the first leader waits until the others are pending behind it
            committer = self._committer_ref[0]
            for _ in range(2000):
                with committer._lock:
                    if len(committer._pending) >= self._hold:
                        break
                threading.Event().wait(0.001)
            else:
                raise AssertionError("the other submitters never queued up")
        self.groups.append(list(items))
        return [f"done:{item}" if item % 5 else ValueError(f"bad {item}") for item in items]


def test_concurrent_submitters_share_a_write_and_each_gets_its_own_outcome():
    ref: list = []
    writer = GatedWriter(ref, hold=7)
    committer = GroupCommitter(writer)
    ref.append(committer)

    def submit(item):
        try:
            return committer.submit(item)
        except ValueError as exc:
            return exc

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(submit, range(1, 9)))

    for item, outcome in zip(range(1, 9), outcomes, strict=True):
        if item % 5:
            assert outcome == f"done:{item}"
        else:
            assert isinstance(outcome, ValueError) and str(outcome) == f"bad {item}"
    assert sorted(x for group in writer.groups for x in group) == list(range(1, 9))
    assert len(writer.groups) == 2 and len(writer.groups[1]) == 7  # the seven waiters went together


def test_a_failing_write_fails_its_whole_group_with_a_copy_each_and_the_committer_recovers():
    calls = []

    def write(items):
        calls.append(list(items))
        if len(calls) == 1:
            raise ConnectionError("database went away")
        return [item * 2 for item in items]

    committer = GroupCommitter(write)
    with pytest.raises(ConnectionError) as first:
        committer.submit(1)
    assert first.value.__cause__ is not None and str(first.value.__cause__) == "database went away"
    assert committer.submit(21) == 42  # no leader is left stuck behind the failure
    assert calls == [[1], [21]]


def test_groups_never_exceed_the_limit():
    sizes = []
    gate = threading.Barrier(2)

    def write(items):
        sizes.append(len(items))
        if len(sizes) == 1:
            gate.wait(timeout=10)  # hold the first leader while twenty more queue up
        return list(items)

    committer = GroupCommitter(write, max_group=6)
    with ThreadPoolExecutor(21) as pool:
        first = pool.submit(committer.submit, 0)
        for _ in range(2000):
            if sizes:
                break
            threading.Event().wait(0.001)
        rest = [pool.submit(committer.submit, n) for n in range(1, 21)]
        for _ in range(2000):
            with committer._lock:
                if len(committer._pending) == 20:
                    break
            threading.Event().wait(0.001)
        gate.wait(timeout=10)
        results = [first.result(timeout=10)] + [f.result(timeout=10) for f in rest]
    assert results == list(range(21))
    assert sizes[0] == 1 and max(sizes) == 6 and sum(sizes) == 21


def test_an_error_that_cannot_be_copied_still_reaches_its_submitter():
    class Picky(Exception):
        def __init__(self, code: int, *, detail: str):  # copy.copy would call Picky(code) and fail
            super().__init__(code)
            self.detail = detail

    def write(items):
        return [Picky(503, detail="down") for _ in items]

    with pytest.raises(Exception) as raised:
        GroupCommitter(write).submit("x")
    assert isinstance(raised.value.__cause__, Picky) and raised.value.__cause__.detail == "down"

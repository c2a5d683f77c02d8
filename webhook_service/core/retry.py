"""The one retry policy: how long a failing event waits, and how many more attempts it gets.

An event's retry state is one number in the event log, `stripe_events.retries_left`: how many
retries it still has beyond the attempt that is due next. NULL means a fresh episode (never failed,
or replayed since): the whole schedule. Drains, single attempts, recovery and replay all read it
through this policy, so a retry that Redis lost comes back from recovery with the retries it had.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryDecision:
    """What follows a failed attempt: a retry after `delay` seconds, or none (`delay is None`)."""

    delay: int | None
    #: Retries the event still has after the one scheduled here (0 when none is scheduled).
    retries_left: int

    @property
    def retrying(self) -> bool:
        return self.delay is not None


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff intervals in seconds, one per retry (`EVENT_RETRY_INTERVALS`)."""

    intervals: tuple[int, ...]

    def _left(self, retries_left: int | None) -> int:
        total = len(self.intervals)
        return total if retries_left is None else max(0, min(retries_left, total))

    def after_failure(self, retries_left: int | None, *, permanent: bool = False) -> RetryDecision:
        """Decide what follows a failure of an event that had `retries_left` (None: a fresh episode).

        A permanent error (the event can never succeed as it is) gets no retry, whatever is left.
        """
        left = self._left(retries_left)
        if permanent or left == 0:
            return RetryDecision(delay=None, retries_left=0)
        return RetryDecision(delay=self.intervals[len(self.intervals) - left], retries_left=left - 1)

    def remaining(self, retries_left: int | None) -> tuple[int, ...]:
        """The intervals still ahead of an event with `retries_left`, in order (for a job enqueued now)."""
        left = self._left(retries_left)
        return self.intervals[len(self.intervals) - left :] if left else ()

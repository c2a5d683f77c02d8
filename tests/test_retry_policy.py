"""The retry policy on its own: the schedule, in order, once; what is left is what follows."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from webhook_service.core.retry import RetryPolicy

intervals_st = st.lists(st.integers(min_value=0, max_value=86_400), max_size=8).map(tuple)


def _follow(policy: RetryPolicy, retries_left: int | None) -> list[int]:
    """The delays an event gets if every attempt from now on fails."""
    delays = []
    while (decision := policy.after_failure(retries_left)).retrying:
        assert decision.delay is not None
        delays.append(decision.delay)
        retries_left = decision.retries_left
    assert decision.retries_left == 0
    return delays


def test_default_schedule_in_order_then_failed():
    policy = RetryPolicy((10, 60, 300))
    first = policy.after_failure(None)
    assert (first.delay, first.retries_left) == (10, 2)
    assert policy.after_failure(2).delay == 60
    assert policy.after_failure(1).delay == 300
    last = policy.after_failure(0)
    assert not last.retrying and last.delay is None


@given(intervals_st)
def test_a_fresh_episode_gets_the_whole_schedule_once(intervals):
    assert _follow(RetryPolicy(intervals), None) == list(intervals)


@given(intervals_st, st.integers(min_value=-3, max_value=12))
def test_what_remains_is_what_follows(intervals, retries_left):
    policy = RetryPolicy(intervals)
    # After the retry that is due now, the event gets exactly the intervals `remaining` names.
    assert _follow(policy, retries_left) == list(policy.remaining(retries_left))


@given(intervals_st, st.one_of(st.none(), st.integers(min_value=0, max_value=12)))
def test_permanent_errors_never_retry(intervals, retries_left):
    decision = RetryPolicy(intervals).after_failure(retries_left, permanent=True)
    assert not decision.retrying and decision.retries_left == 0

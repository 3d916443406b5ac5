"""RetryPolicy: capped exponential backoff with full jitter, a pure function."""

from __future__ import annotations

import random

import pytest

from longjobs.retry import RetryPolicy


def test_no_retry_once_the_last_attempt_ran() -> None:
    policy = RetryPolicy()

    assert policy.next_delay(attempt=3, max_attempts=3, retryable=True) is None
    assert policy.next_delay(attempt=4, max_attempts=3, retryable=True) is None


def test_no_retry_for_a_non_retryable_error() -> None:
    policy = RetryPolicy()

    assert policy.next_delay(attempt=1, max_attempts=5, retryable=False) is None
    assert policy.next_delay(attempt=1, max_attempts=5, retryable=False, retry_after=2.0) is None


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 2.0), (2, 6.0), (3, 18.0), (4, 54.0)])
def test_full_jitter_draws_between_zero_and_the_exponential_ceiling(
    monkeypatch: pytest.MonkeyPatch, attempt: int, ceiling: float
) -> None:
    drawn: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        drawn.append((low, high))
        return high

    monkeypatch.setattr(random, "uniform", uniform)
    policy = RetryPolicy(base_delay=2.0, factor=3.0, max_delay=1000.0)

    delay = policy.next_delay(attempt=attempt, max_attempts=10, retryable=True)

    assert drawn == [(0.0, ceiling)]
    assert delay == ceiling


def test_jittered_delays_stay_within_bounds_and_spread_out() -> None:
    policy = RetryPolicy(base_delay=1.0, factor=2.0, max_delay=300.0)

    delays = [policy.next_delay(attempt=3, max_attempts=10, retryable=True) for _ in range(2000)]

    values = [d for d in delays if d is not None]
    assert len(values) == 2000
    assert all(0.0 <= d <= 4.0 for d in values)
    assert min(values) < 1.0
    assert max(values) > 3.0


def test_the_delay_is_capped_at_max_delay() -> None:
    policy = RetryPolicy(base_delay=1.0, factor=2.0, max_delay=30.0, jitter=False)

    assert policy.next_delay(attempt=50, max_attempts=100, retryable=True) == 30.0
    jittered = RetryPolicy(base_delay=1.0, factor=2.0, max_delay=30.0)
    draws = [jittered.next_delay(attempt=50, max_attempts=100, retryable=True) for _ in range(200)]
    assert all(d is not None and 0.0 <= d <= 30.0 for d in draws)


def test_retry_after_is_honoured_exactly() -> None:
    policy = RetryPolicy(max_delay=300.0)

    assert policy.next_delay(attempt=1, max_attempts=3, retryable=True, retry_after=7.5) == 7.5


def test_retry_after_is_capped_and_never_negative() -> None:
    policy = RetryPolicy(max_delay=60.0)

    assert policy.next_delay(attempt=1, max_attempts=3, retryable=True, retry_after=3600) == 60.0
    assert policy.next_delay(attempt=1, max_attempts=3, retryable=True, retry_after=-5) == 0.0


def test_without_jitter_the_delays_are_the_exponential_series() -> None:
    policy = RetryPolicy(base_delay=0.5, factor=2.0, max_delay=300.0, jitter=False)

    delays = [policy.next_delay(attempt=n, max_attempts=10, retryable=True) for n in range(1, 6)]

    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert delays == [
        policy.next_delay(attempt=n, max_attempts=10, retryable=True) for n in range(1, 6)
    ]

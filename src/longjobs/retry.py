"""When to try a failed job again: a small pure policy."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter.

    The delay before attempt ``n + 1`` is drawn uniformly from
    ``[0, min(max_delay, base_delay * factor ** (n - 1))]`` (AWS "full jitter"), so that many
    jobs failing together do not come back together.

    >>> RetryPolicy(base_delay=1.0).next_delay(attempt=1, max_attempts=1, retryable=True) is None
    True
    """

    base_delay: float = 1.0
    factor: float = 2.0
    max_delay: float = 300.0
    jitter: bool = True

    def next_delay(
        self,
        *,
        attempt: int,
        max_attempts: int,
        retryable: bool,
        retry_after: float | None = None,
    ) -> float | None:
        """Seconds to wait before the next attempt, or None when the job must fail now."""
        if not retryable or attempt >= max_attempts:
            return None
        if retry_after is not None:
            return max(0.0, min(retry_after, self.max_delay))
        ceiling = min(self.max_delay, self.base_delay * self.factor ** max(0, attempt - 1))
        return random.uniform(0.0, ceiling) if self.jitter else ceiling

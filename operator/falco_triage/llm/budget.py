"""Queries per rolling hour: a hard cap on what the narrative step may spend.

A sliding window (timestamps of the calls in the last hour) rather than a token bucket: the
setting reads as "at most N calls in any hour", which is what a bill or a shared GPU needs.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

WINDOW_SECONDS = 3600.0


class HourlyBudget:
    def __init__(self, per_hour: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = per_hour
        self._clock = clock
        self._spent: deque[float] = deque()

    def _expire(self) -> float:
        now = self._clock()
        while self._spent and now - self._spent[0] >= WINDOW_SECONDS:
            self._spent.popleft()
        return now

    def remaining(self) -> int:
        self._expire()
        return max(0, self._limit - len(self._spent))

    def try_spend(self) -> bool:
        """Spend one query if the last hour has room for it."""
        now = self._expire()
        if len(self._spent) >= self._limit:
            return False
        self._spent.append(now)
        return True

    def refund(self) -> None:
        """Give back the latest query (it was never sent)."""
        if self._spent:
            self._spent.pop()

    def next_in(self) -> float:
        """Seconds until a query is available again (0 if one is now)."""
        now = self._expire()
        if len(self._spent) < self._limit:
            return 0.0
        return max(0.0, self._spent[0] + WINDOW_SECONDS - now)

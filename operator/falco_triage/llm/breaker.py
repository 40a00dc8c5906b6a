"""A circuit breaker: after repeated failures, stop calling the backend for a while.

Closed: calls go through; ``failures`` failed narrations in a row open it. Open: no calls until
``reset_seconds`` have passed (or longer, when the server asked for it with ``Retry-After``).
Half-open: one probe call goes through; its success closes the breaker, its failure opens it
again. A probe that never reports (its task was cancelled) expires after ``reset_seconds``, so
the breaker cannot stay half-open for ever.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, eq=False)
class Ticket:
    """Permission for one call; ``probe`` tickets decide the half-open state."""

    probe: bool


class CircuitBreaker:
    def __init__(
        self,
        failures: int,
        reset_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        self._threshold = failures
        self._reset = reset_seconds
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._open_until = 0.0
        self._probe: Ticket | None = None
        self._probe_since = 0.0

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() >= self._open_until:
            self._set(BreakerState.HALF_OPEN)
        return self._state

    def retry_in(self) -> float:
        """Seconds until the next call may go through (0 when one may go now)."""
        if self.state is BreakerState.OPEN:
            return max(0.0, self._open_until - self._clock())
        return 0.0

    def allow(self) -> Ticket | None:
        """A ticket for one call, or None while the breaker holds calls back."""
        state = self.state
        if state is BreakerState.CLOSED:
            return Ticket(probe=False)
        if state is BreakerState.OPEN:
            return None
        now = self._clock()
        if self._probe is not None and now - self._probe_since < self._reset:
            return None
        self._probe, self._probe_since = Ticket(probe=True), now
        return self._probe

    def success(self, ticket: Ticket) -> None:
        """The backend answered: whatever the state, it works again."""
        self._forget(ticket)
        self._failures = 0
        self._set(BreakerState.CLOSED)

    def failure(self, ticket: Ticket, hold_seconds: float | None = None) -> None:
        """The call failed; ``hold_seconds`` (from Retry-After) keeps the breaker open longer."""
        was_probe = ticket is self._probe
        self._forget(ticket)
        if hold_seconds is not None and hold_seconds > 0:
            self._open(hold_seconds)
            return
        if was_probe:
            self._open(self._reset)
        elif self._state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self._threshold:
                self._open(self._reset)

    def release(self, ticket: Ticket) -> None:
        """The call was not made after all; a probe slot becomes free again."""
        self._forget(ticket)

    def _forget(self, ticket: Ticket) -> None:
        if ticket is self._probe:
            self._probe = None

    def _open(self, seconds: float) -> None:
        self._open_until = max(self._open_until, self._clock() + seconds)
        self._failures = 0
        self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        if state is not self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(state)

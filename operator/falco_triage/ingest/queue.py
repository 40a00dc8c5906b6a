"""The bounded write buffer between acknowledging events and writing FalcoAlerts.

One entry per alert waiting to be written (keyed by namespace and name): repeats that arrive
while it waits only raise its count, so the buffer's size is the number of *distinct* pending
alerts, not events. Writers take the most severe, oldest entry first.

When the buffer is full and a new alert arrives, the least severe, newest waiting alert is shed
(or the new one, if nothing waiting is less severe): Critical and above go last. Every shed
entry is reported with its event count to ``on_shed``, which counts and logs it.

The :class:`TokenBucket` bounds API requests per second whatever the event rate.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from falco_triage.models.alert import Target
from falco_triage.models.event import FalcoEvent
from falco_triage.models.priority import Priority

AlertKey = tuple[str, str]
"""(namespace, name) of a FalcoAlert."""

_RANKS = 8


@dataclass(slots=True)
class PendingAlert:
    """Occurrences of one alert waiting to be written."""

    key: AlertKey
    event: FalcoEvent  # the earliest event: becomes the spec if the alert is new
    target: Target
    fingerprint: str
    count: int
    first_seen: datetime
    last_seen: datetime
    rank: int
    doubt: object | None = None  # an unanswered earlier write, see falco_triage.k8s.alerts
    failures: int = 0

    @property
    def priority(self) -> Priority:
        return self.event.priority

    def absorb(self, other: PendingAlert) -> None:
        """Fold ``other`` (same key) into this entry; the earlier event stays the template."""
        if other.first_seen < self.first_seen:
            self.event, self.target = other.event, other.target
        self.count += other.count
        self.first_seen = min(self.first_seen, other.first_seen)
        self.last_seen = max(self.last_seen, other.last_seen)
        self.rank = max(self.rank, other.rank)
        self.doubt = self.doubt or other.doubt
        self.failures = max(self.failures, other.failures)


class Offer(Enum):
    NEW = "new"
    AGGREGATED = "aggregated"
    SHED = "shed"


ShedHook = Callable[[PendingAlert, str], None]


class WriteQueue:
    """Pending alerts by priority; single-threaded (the event loop), no locks."""

    def __init__(self, capacity: int, on_shed: ShedHook) -> None:
        self.capacity = capacity
        self._on_shed = on_shed
        self._entries: dict[AlertKey, PendingAlert] = {}
        self._ranks: list[OrderedDict[AlertKey, None]] = [OrderedDict() for _ in range(_RANKS)]
        self._inflight: set[AlertKey] = set()
        self._events = 0
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def events(self) -> int:
        """Events in the waiting entries (not counting those being written)."""
        return self._events

    @property
    def full(self) -> bool:
        return len(self._entries) >= self.capacity

    @property
    def busy(self) -> bool:
        return bool(self._entries or self._inflight)

    def bump(self, key: AlertKey, at: datetime) -> bool:
        """Count one more occurrence of a waiting alert; False if ``key`` is not waiting."""
        entry = self._entries.get(key)
        if entry is None:
            return False
        entry.count += 1
        self._events += 1
        if at < entry.first_seen:
            entry.first_seen = at
        elif at > entry.last_seen:
            entry.last_seen = at
        return True

    def offer(self, entry: PendingAlert) -> Offer:
        """Add new occurrences; merged if the alert is waiting, shed if there is no room."""
        waiting = self._entries.get(entry.key)
        if waiting is not None:
            self._absorb(waiting, entry)
            return Offer.AGGREGATED
        if not self._make_room(entry, "buffer full"):
            return Offer.SHED
        self._insert(entry, front=False)
        return Offer.NEW

    def requeue(self, entry: PendingAlert) -> None:
        """Put back an entry whose write failed, ahead of newer ones of its priority."""
        waiting = self._entries.get(entry.key)
        if waiting is not None:
            self._absorb(waiting, entry)
            self._ranks[waiting.rank].move_to_end(entry.key, last=False)  # it holds older events
        elif self._make_room(entry, "buffer full while retrying"):
            self._insert(entry, front=True)

    async def take(self) -> PendingAlert:
        """The most severe, oldest entry not being written already; waits for one."""
        while True:
            entry = self._pop()
            if entry is not None:
                return entry
            self._ready.clear()
            await self._ready.wait()

    def release(self, key: AlertKey) -> None:
        """The write of ``key`` ended (requeue first if it failed)."""
        self._inflight.discard(key)
        if key in self._entries:
            self._ready.set()
        if not self.busy:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Until nothing waits and nothing is being written."""
        await self._idle.wait()

    def drain(self) -> list[PendingAlert]:
        """Remove and return everything waiting (at shutdown)."""
        entries = list(self._entries.values())
        self._entries.clear()
        for bucket in self._ranks:
            bucket.clear()
        self._events = 0
        if not self._inflight:
            self._idle.set()
        return entries

    def _pop(self) -> PendingAlert | None:
        for bucket in reversed(self._ranks):
            for key in bucket:
                if key not in self._inflight:
                    del bucket[key]
                    entry = self._entries.pop(key)
                    self._events -= entry.count
                    self._inflight.add(key)
                    return entry
        return None

    def _absorb(self, waiting: PendingAlert, entry: PendingAlert) -> None:
        old_rank = waiting.rank
        waiting.absorb(entry)
        self._events += entry.count
        if waiting.rank != old_rank:
            del self._ranks[old_rank][waiting.key]
            self._ranks[waiting.rank][waiting.key] = None

    def _make_room(self, entry: PendingAlert, why: str) -> bool:
        """True if ``entry`` fits (shedding a less severe one if needed); else sheds ``entry``."""
        if len(self._entries) < self.capacity:
            return True
        for rank in range(min(entry.rank, _RANKS)):
            bucket = self._ranks[rank]
            if bucket:
                victim_key, _ = bucket.popitem(last=True)  # the newest of the least severe
                victim = self._entries.pop(victim_key)
                self._events -= victim.count
                self._on_shed(victim, why)
                return True
        self._on_shed(entry, why)
        return False

    def _insert(self, entry: PendingAlert, *, front: bool) -> None:
        self._entries[entry.key] = entry
        bucket = self._ranks[entry.rank]
        bucket[entry.key] = None
        if front:
            bucket.move_to_end(entry.key, last=False)
        self._events += entry.count
        self._idle.clear()
        if entry.key not in self._inflight:
            self._ready.set()


class TokenBucket:
    """``rate`` requests per second on average, bursts of up to ``burst``; thread-safe.

    :meth:`acquire` reserves a token and sleeps the calling thread until it is due, so over any
    interval of T seconds at most ``burst + rate * T`` requests start, from any number of threads.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._last = clock()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take a token now; the seconds to wait before using it (0 if one was available)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def acquire(self) -> None:
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)

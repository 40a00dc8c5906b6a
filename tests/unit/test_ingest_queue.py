"""The write buffer and rate limiter: repeats coalesce into one waiting entry, the most severe
waits least, a full buffer sheds the least severe first (Critical and above last) and reports
every shed event, failed writes come back without losing or double-counting, and the token
bucket never lets more than ``burst + rate * T`` requests start in T seconds."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import pytest

from falco_triage.ingest.queue import Offer, PendingAlert, TokenBucket, WriteQueue
from falco_triage.models.alert import Target, TargetKind
from falco_triage.models.priority import Priority
from tests.unit.factories import make_event

T0 = datetime(2024, 5, 14, 9, 0, tzinfo=UTC)
TARGET = Target(kind=TargetKind.HOST, display="worker-1", node="worker-1")


def _entry(
    name: str, priority: Priority = Priority.NOTICE, count: int = 1, at: datetime = T0
) -> PendingAlert:
    event = make_event(priority=priority.value, at=at)
    return PendingAlert(
        key=("ns", name),
        event=event,
        target=TARGET,
        fingerprint="0" * 64,
        count=count,
        first_seen=at,
        last_seen=at,
        rank=priority.rank,
    )


class Shed:
    def __init__(self) -> None:
        self.entries: list[tuple[str, Priority, int, str]] = []

    def __call__(self, entry: PendingAlert, why: str) -> None:
        self.entries.append((entry.key[1], entry.priority, entry.count, why))

    @property
    def events(self) -> int:
        return sum(count for _, _, count, _ in self.entries)


def test_repeats_coalesce_into_one_waiting_entry() -> None:
    queue = WriteQueue(10, Shed())
    assert queue.offer(_entry("a")) is Offer.NEW
    assert queue.bump(("ns", "a"), T0 + timedelta(seconds=5))
    assert queue.offer(_entry("a", count=3, at=T0 - timedelta(seconds=5))) is Offer.AGGREGATED
    assert not queue.bump(("ns", "b"), T0)
    assert (len(queue), queue.events) == (1, 5)


async def test_take_returns_the_merged_entry_with_first_and_last_seen() -> None:
    queue = WriteQueue(10, Shed())
    queue.offer(_entry("a"))
    queue.bump(("ns", "a"), T0 + timedelta(seconds=5))
    queue.offer(_entry("a", at=T0 - timedelta(seconds=5)))
    entry = await queue.take()
    assert entry.count == 3
    assert (entry.first_seen, entry.last_seen) == (
        T0 - timedelta(seconds=5),
        T0 + timedelta(seconds=5),
    )
    assert entry.event.time == T0 - timedelta(seconds=5)  # the earliest event is the template
    assert (len(queue), queue.events) == (0, 0)


async def test_most_severe_first_then_oldest() -> None:
    queue = WriteQueue(10, Shed())
    queue.offer(_entry("notice-1", Priority.NOTICE))
    queue.offer(_entry("critical", Priority.CRITICAL))
    queue.offer(_entry("notice-2", Priority.NOTICE))
    queue.offer(_entry("emergency", Priority.EMERGENCY))
    order = [(await queue.take()).key[1] for _ in range(4)]
    assert order == ["emergency", "critical", "notice-1", "notice-2"]


async def test_an_alert_being_written_is_not_taken_twice() -> None:
    queue = WriteQueue(10, Shed())
    queue.offer(_entry("a", Priority.CRITICAL))
    first = await queue.take()
    queue.offer(_entry("a", Priority.CRITICAL))  # a repeat while the first write is in flight
    queue.offer(_entry("b", Priority.DEBUG))
    assert (await queue.take()).key[1] == "b"
    waiter = asyncio.create_task(queue.take())
    await asyncio.sleep(0)
    assert not waiter.done()
    queue.release(first.key)
    second = await asyncio.wait_for(waiter, 1)
    assert second.key == first.key


def test_full_buffer_sheds_the_least_severe_newest_first() -> None:
    shed = Shed()
    queue = WriteQueue(3, shed)
    queue.offer(_entry("notice-old", Priority.NOTICE, count=4))
    queue.offer(_entry("notice-new", Priority.NOTICE, count=2))
    queue.offer(_entry("critical", Priority.CRITICAL))
    assert queue.offer(_entry("error", Priority.ERROR)) is Offer.NEW
    assert shed.entries == [("notice-new", Priority.NOTICE, 2, "buffer full")]
    assert queue.offer(_entry("warning", Priority.WARNING)) is Offer.NEW
    assert shed.entries[-1][:3] == ("notice-old", Priority.NOTICE, 4)
    assert len(queue) == 3


def test_new_event_is_shed_when_nothing_waiting_is_less_severe() -> None:
    shed = Shed()
    queue = WriteQueue(2, shed)
    queue.offer(_entry("c1", Priority.CRITICAL))
    queue.offer(_entry("c2", Priority.CRITICAL))
    assert queue.offer(_entry("notice", Priority.NOTICE)) is Offer.SHED
    assert queue.offer(_entry("c3", Priority.CRITICAL)) is Offer.SHED
    assert [name for name, *_ in shed.entries] == ["notice", "c3"]
    assert queue.offer(_entry("alert", Priority.ALERT)) is Offer.NEW
    assert shed.entries[-1][:2] == ("c2", Priority.CRITICAL)


def test_repeats_of_a_waiting_alert_are_never_shed() -> None:
    shed = Shed()
    queue = WriteQueue(1, shed)
    queue.offer(_entry("a", Priority.DEBUG))
    for _ in range(100):
        assert queue.bump(("ns", "a"), T0)
    assert queue.offer(_entry("a", Priority.DEBUG)) is Offer.AGGREGATED
    assert shed.entries == []
    assert queue.events == 102


def test_shedding_accounts_for_every_event() -> None:
    shed = Shed()
    queue = WriteQueue(5, shed)
    offered = 0
    for i in range(50):
        priority = list(Priority)[i % 8]
        queue.offer(_entry(f"e{i}", priority, count=i + 1))
        offered += i + 1
    assert queue.events + shed.events == offered
    waiting = {entry.priority for entry in queue.drain()}
    assert waiting == {Priority.EMERGENCY}


async def test_requeue_merges_with_newer_repeats_and_goes_first() -> None:
    queue = WriteQueue(10, Shed())
    queue.offer(_entry("a", Priority.NOTICE, count=5))
    queue.offer(_entry("b", Priority.NOTICE))
    failed = await queue.take()
    queue.offer(_entry("a", Priority.NOTICE, count=2, at=T0 + timedelta(minutes=1)))
    failed.doubt = "marker"
    queue.requeue(failed)
    queue.release(failed.key)
    again = await queue.take()
    assert again.key == ("ns", "a")
    assert again.count == 7
    assert again.doubt == "marker"
    assert (again.first_seen, again.last_seen) == (T0, T0 + timedelta(minutes=1))


async def test_requeue_into_a_full_buffer_sheds_by_priority() -> None:
    shed = Shed()
    queue = WriteQueue(1, shed)
    queue.offer(_entry("critical", Priority.CRITICAL))
    failed = await queue.take()
    queue.offer(_entry("debug", Priority.DEBUG))
    queue.requeue(failed)
    assert [name for name, *_ in shed.entries] == ["debug"]
    assert len(queue) == 1


async def test_wait_idle_waits_for_writes_in_flight() -> None:
    queue = WriteQueue(10, Shed())
    await asyncio.wait_for(queue.wait_idle(), 1)
    queue.offer(_entry("a"))
    entry = await queue.take()
    idle = asyncio.create_task(queue.wait_idle())
    await asyncio.sleep(0)
    assert not idle.done()
    queue.release(entry.key)
    await asyncio.wait_for(idle, 1)


def test_priority_rises_with_a_more_severe_repeat() -> None:
    shed = Shed()
    queue = WriteQueue(2, shed)
    queue.offer(_entry("a", Priority.NOTICE))
    queue.offer(_entry("a", Priority.CRITICAL))
    queue.offer(_entry("b", Priority.NOTICE))
    queue.offer(_entry("c", Priority.WARNING))
    assert [name for name, *_ in shed.entries] == ["b"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, 5, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        bucket.acquire()
    assert clock.slept == []
    for _ in range(10):
        bucket.acquire()
    assert clock.now == pytest.approx(1.0)
    assert clock.slept == pytest.approx([0.1] * 10)


def test_token_bucket_refills_while_idle_up_to_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, 3, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        bucket.acquire()
    clock.now += 100.0
    for _ in range(3):
        bucket.acquire()
    assert clock.slept == []
    assert bucket.reserve() == pytest.approx(0.5)


def test_token_bucket_bounds_concurrent_threads() -> None:
    rate, burst, duration = 50.0, 5, 0.6
    bucket = TokenBucket(rate, burst)
    starts: list[float] = []
    lock = threading.Lock()
    import time

    begin = time.monotonic()

    def worker() -> None:
        while time.monotonic() - begin < duration:
            bucket.acquire()
            with lock:
                starts.append(time.monotonic() - begin)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = max(starts)
    assert len(starts) <= burst + rate * elapsed + 1

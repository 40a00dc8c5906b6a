"""The writer loses no acknowledged event: transient API failures are retried (with repeats that
arrived meanwhile merged in), a write whose answer was lost is resolved without counting twice,
an unavailable namespace sends the alert to the operator's namespace, only objects the API
rejects for good are dropped (counted and logged), and shutdown reports what it could not
write."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from falco_triage.events.fingerprint import fingerprint
from falco_triage.events.target import resolve_target
from falco_triage.ingest.metrics import Metrics
from falco_triage.ingest.queue import PendingAlert, WriteQueue
from falco_triage.ingest.writer import AlertWriter, WriterConfig
from falco_triage.k8s.alerts import Doubt, NamespaceUnavailable, WriteUnknown
from falco_triage.k8s.errors import Forbidden, Invalid, Transient
from tests.unit.factories import FakeAlertStore, make_event

NS = "falco-triage"
T0 = datetime(2024, 5, 14, 9, 0, tzinfo=UTC)


def _entry(
    name: str = "a", namespace: str = "shop", count: int = 1, priority: str = "Notice"
) -> PendingAlert:
    event = make_event(namespace=namespace, priority=priority)
    target = resolve_target(event, NS)
    return PendingAlert(
        key=(namespace, name),
        event=event,
        target=target,
        fingerprint=fingerprint(event, target),
        count=count,
        first_seen=T0,
        last_seen=T0,
        rank=event.priority.rank,
    )


class Harness:
    def __init__(self, store: FakeAlertStore, shed: list[int]) -> None:
        self.metrics = Metrics()
        self.queue = WriteQueue(100, lambda entry, why: shed.append(entry.count))
        self.store = store
        self.writer = AlertWriter(
            self.queue, store, self.metrics, WriterConfig(NS, workers=2, backoff_max=0.05)
        )

    def value(self, metric: Any, *labels: str) -> float:
        return float((metric.labels(*labels) if labels else metric)._value.get())

    async def settle(self) -> None:
        await asyncio.wait_for(self.queue.wait_idle(), 5.0)


@pytest.fixture
async def harness() -> Any:
    h = Harness(FakeAlertStore(), [])
    h.writer.start()
    yield h
    await h.writer.stop(0.5)


async def test_writes_and_counts(harness: Harness) -> None:
    harness.queue.offer(_entry("a", count=3))
    harness.queue.offer(_entry("b", namespace="payments"))
    await harness.settle()
    assert harness.store.count("shop", "a") == 3
    assert harness.store.count("payments", "b") == 1
    assert harness.value(harness.metrics.events_written) == 4
    assert harness.value(harness.metrics.alerts_created) == 2


@pytest.mark.parametrize(
    "error",
    [
        Transient("apiserver down", reason="ConnectionRefused"),
        Transient("too many requests", status=429, retry_after=0.01),
        Forbidden("RBAC not ready yet", status=403),
    ],
)
async def test_failures_are_retried_until_written(harness: Harness, error: Exception) -> None:
    harness.store.fail_next = [error, error, error]
    harness.queue.offer(_entry("a", count=5))
    await harness.settle()
    assert harness.store.count("shop", "a") == 5
    assert harness.store.calls == 4


async def test_repeats_during_an_outage_merge_into_the_retried_write() -> None:
    h = Harness(FakeAlertStore(), [])
    h.store.fail_next = [Transient("down")] * 20
    h.writer.start()
    for _ in range(50):
        entry = _entry("a")
        if not h.queue.bump(entry.key, T0):
            h.queue.offer(entry)
        await asyncio.sleep(0.002)
    await h.settle()
    await h.writer.stop(0.5)
    assert h.store.count("shop", "a") == 50
    assert len(h.store.alerts) == 1


async def test_unknown_outcome_that_did_land_is_not_counted_twice(harness: Harness) -> None:
    # The fake applied nothing yet; pretend an earlier write of 4 was applied before its
    # answer was lost: the store resolves the doubt and adds only the rest.
    harness.store.alerts[("shop", "a")] = {"spec": None, "count": 4, "first": T0, "last": T0}
    entry = _entry("a", count=6)
    entry.doubt = Doubt(resource_version="1", count_after=4, count=4)
    harness.queue.offer(entry)
    await harness.settle()
    assert harness.store.count("shop", "a") == 6
    assert harness.value(harness.metrics.events_written) == 6


async def test_write_unknown_is_retried_with_its_doubt() -> None:
    h = Harness(FakeAlertStore(), [])
    doubt = Doubt(resource_version="7", count_after=99, count=2)
    h.store.fail_next = [WriteUnknown(Transient("reset", maybe_applied=True), doubt)]
    h.writer.start()
    h.queue.offer(_entry("a", count=2))
    await h.settle()
    await h.writer.stop(0.5)
    assert h.store.count("shop", "a") == 2  # count_after 99 was never reached: not applied


async def test_unavailable_namespace_moves_the_alert_to_the_operator_namespace(
    harness: Harness, caplog: Any
) -> None:
    harness.store.fail_next = [NamespaceUnavailable('namespaces "gone" not found', status=404)]
    with caplog.at_level(logging.WARNING):
        harness.queue.offer(_entry("a", namespace="gone", count=2))
        await harness.settle()
    assert harness.store.count(NS, "a") == 2
    assert ("gone", "a") not in harness.store.alerts
    assert "writing FalcoAlert a to falco-triage instead" in caplog.text


async def test_a_missing_namespace_is_remembered_for_a_while(harness: Harness) -> None:
    harness.store.fail_next = [NamespaceUnavailable('namespaces "gone" not found', status=404)]
    harness.queue.offer(_entry("a", namespace="gone"))
    await harness.settle()
    harness.queue.offer(_entry("b", namespace="gone"))
    await harness.settle()
    assert harness.store.calls == 3  # a: failed + retried there; b: straight to ours
    assert harness.store.count(NS, "b") == 1


async def test_rejected_object_is_dropped_counted_and_logged(harness: Harness, caplog: Any) -> None:
    harness.store.fail_next = [Invalid("spec.rule: Too long", status=422)]
    with caplog.at_level(logging.ERROR):
        harness.queue.offer(_entry("a", count=7))
        await harness.settle()
    assert harness.store.alerts == {}
    assert harness.value(harness.metrics.events_dropped, "invalid") == 7
    assert "dropping 7 events" in caplog.text


async def test_unexpected_errors_never_lose_events(harness: Harness) -> None:
    harness.store.fail_next = [RuntimeError("bug")]
    harness.queue.offer(_entry("a", count=3))
    await harness.settle()
    assert harness.store.count("shop", "a") == 3


async def test_shutdown_flushes_then_reports_what_is_left(caplog: Any) -> None:
    h = Harness(FakeAlertStore(), [])
    h.store.fail_next = [Transient("down")] * 10_000
    h.writer.start()
    h.queue.offer(_entry("a", count=3, priority="Critical"))
    h.queue.offer(_entry("b", count=4))
    await asyncio.sleep(0.05)
    with caplog.at_level(logging.ERROR):
        left = await h.writer.stop(0.2)
    assert left == 7
    assert h.value(h.metrics.events_dropped, "shutdown") == 7
    assert "shutdown left 7 events in 2 alerts unwritten" in caplog.text
    assert "3 events of rule 'Terminal shell in container' (Critical)" in caplog.text


async def test_shutdown_with_an_empty_queue_is_immediate() -> None:
    h = Harness(FakeAlertStore(), [])
    h.writer.start()
    started = asyncio.get_running_loop().time()
    assert await h.writer.stop(10.0) == 0
    assert asyncio.get_running_loop().time() - started < 1.0

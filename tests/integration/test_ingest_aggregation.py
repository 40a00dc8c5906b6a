"""Aggregation on the real control plane: 1,000 repeats of one event (single POSTs from 16
concurrent senders and batches) make one FalcoAlert counting exactly 1,000, with far fewer API
writes than events; two receivers fed the same repeats concurrently converge on the same object
and stay exact (their conflicting writes resolve by read-modify-write)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.integration.test_ingest_alerts import expected_key, wait_for_alerts
from tests.support.controlplane import Cluster
from tests.unit.factories import (
    TestReceiver,
    make_raw_event,
    receiver_settings,
    start_test_receiver,
)


async def send(
    receiver: TestReceiver, event: dict[str, Any], singles: int, batches: int, size: int
) -> int:
    """POST ``singles`` single events from 16 concurrent senders and ``batches`` arrays of
    ``size``; returns the events acknowledged."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for _ in range(singles):
        queue.put_nowait(1)
    for _ in range(batches):
        queue.put_nowait(size)
    acked = 0

    async def sender() -> None:
        nonlocal acked
        while not queue.empty():
            n = queue.get_nowait()
            status, body = await receiver.post(event if n == 1 else [event] * n)
            assert status == 200, body
            acked += body["accepted"]

    await asyncio.gather(*(sender() for _ in range(16)))
    return acked


async def test_a_thousand_repeats_make_one_alert_counting_a_thousand(
    control_plane: Cluster, namespace: str
) -> None:
    event = make_raw_event(namespace=namespace, pod="crashloop-0", sidekick=True)
    key = expected_key(event, namespace)
    settings = receiver_settings(namespace)  # default rate limit: 20 writes/s
    async with start_test_receiver(settings, control_plane.kubeconfig) as receiver:
        assert await send(receiver, event, singles=500, batches=5, size=100) == 1000
        alerts = await wait_for_alerts(control_plane, [namespace], {key: 1000})
        assert receiver.metric("events_written") == 1000
        writes = receiver.metric("api_requests", "create") + receiver.metric(
            "api_requests", "patch_status"
        )
    assert writes < 100  # repeats coalesce while waiting; writes are bounded by the limiter
    occurrences = alerts[key]["status"]["occurrences"]
    assert occurrences["firstSeen"] == occurrences["lastSeen"]  # all carried the same time


async def test_two_receivers_concurrently_stay_exact(
    control_plane: Cluster, namespace: str
) -> None:
    hot = make_raw_event(namespace=namespace, pod="hot-0")
    others = [make_raw_event(namespace=namespace, pod=f"pod-{i}") for i in range(6)]
    # Tiny batches and a fast limiter on both sides make their writes to one object collide.
    settings = receiver_settings(namespace, write_qps=200.0, write_burst=50, write_workers=4)
    async with (
        start_test_receiver(settings, control_plane.kubeconfig) as first,
        start_test_receiver(settings, control_plane.kubeconfig) as second,
    ):
        results = await asyncio.gather(
            send(first, hot, singles=400, batches=4, size=50),
            send(second, hot, singles=400, batches=4, size=50),
            *(
                send(first if i % 2 else second, other, singles=3, batches=1, size=7)
                for i, other in enumerate(others)
            ),
        )
        assert results[:2] == [600, 600]
        expected = {expected_key(hot, namespace): 1200} | {
            expected_key(o, namespace): 10 for o in others
        }
        await wait_for_alerts(control_plane, [namespace], expected)
        created = first.metric("alerts_created") + second.metric("alerts_created")
        collisions = sum(
            r.metric("api_errors", "patch_status", "Conflict")
            + r.metric("api_errors", "create", "AlreadyExists")
            for r in (first, second)
        )
    assert created == 7  # each alert created once, by whichever receiver got there first
    assert collisions > 0, "the receivers never collided, so this proved nothing"

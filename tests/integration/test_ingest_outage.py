"""API server outage: with kube-apiserver stopped for 30 s the receiver keeps acknowledging
(new alerts and repeats alike, none shed), and after the restart every acknowledged event is
in the FalcoAlerts — counts exact, nothing lost, nothing counted twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from tests.integration.test_ingest_alerts import expected_key, wait_for_alerts
from tests.support.controlplane import Cluster
from tests.unit.factories import make_raw_event, receiver_settings, start_test_receiver

OUTAGE_SECONDS = 30.0


@pytest.mark.slow
async def test_no_acknowledged_event_is_lost_while_the_api_server_is_down(
    control_plane: Cluster, namespace: str
) -> None:
    steady = make_raw_event(namespace=namespace, pod="steady-0")
    burst = make_raw_event("Read sensitive file untrusted", namespace=namespace, pod="burst-0")
    acked: Counter[tuple[str, str]] = Counter()

    async def post(receiver: Any, body: Any, key: tuple[str, str]) -> None:
        status, answer = await receiver.post(body)
        assert status == 200, answer
        assert answer["shed"] == 0
        acked[key] += answer["accepted"]

    settings = receiver_settings(namespace, shutdown_flush_seconds=5.0)
    async with start_test_receiver(settings, control_plane.kubeconfig) as receiver:
        for _ in range(10):
            await post(receiver, steady, expected_key(steady, namespace))
        await wait_for_alerts(control_plane, [namespace], dict(acked))

        await asyncio.to_thread(control_plane.stop_apiserver)
        try:
            loop = asyncio.get_running_loop()
            down_since = loop.time()
            tick = 0
            while loop.time() - down_since < OUTAGE_SECONDS:
                await post(receiver, steady, expected_key(steady, namespace))
                if tick % 10 == 0:  # a new alert every second, a batch of repeats too
                    new = make_raw_event(namespace=namespace, pod=f"during-{tick // 10}")
                    await post(receiver, new, expected_key(new, namespace))
                    await post(receiver, [burst] * 25, expected_key(burst, namespace))
                tick += 1
                await asyncio.sleep(0.1)
            assert (
                receiver.metric("api_errors", "patch_status", "NewConnectionError")
                + sum(
                    receiver.metric("api_errors", op, reason)
                    for op in ("create", "patch_status", "get")
                    for reason in ("MaxRetryError", "ProtocolError")
                )
                > 0
            ), "the receiver never noticed the outage"
            async with receiver.session.get(f"{receiver.runner.url}/readyz") as ready:
                assert ready.status == 200  # still taking traffic: the buffer has room
        finally:
            await asyncio.to_thread(control_plane.start_apiserver)

        assert len(acked) >= 12  # the two repeated alerts and at least ten created meanwhile
        assert sum(acked.values()) > 500
        # The writer backs off at most 5 s between probes, so it is back within seconds.
        await wait_for_alerts(control_plane, [namespace], dict(acked))
        assert receiver.metric("events_written") == sum(acked.values())
        assert sum(receiver.metric("events_shed", p) for p in ("Notice", "Warning")) == 0

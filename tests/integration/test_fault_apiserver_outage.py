"""The API server stopped for 60 s under steady load, then restarted, with the receiver and the
operator running as their own processes throughout.

A sender posts a modest, steady mix the whole time (a repeating shell alert that an Enforce
policy isolates with a NetworkPolicy, repeats of other alerts, and a new alert every second).
Proved: the receiver acknowledges every request during the outage (its buffer holds the
alerts; ``/readyz`` stays ok); afterwards every acknowledged event is counted — the sum of
``status.occurrences.count`` plus the events counted as shed equals the number acknowledged,
and per alert the counts are exact; the operator's watches recover (a pod and a shell alert for
it that first appear after the restart are analyzed and isolated); and the Enforce policy's
NetworkPolicy exists exactly once per pod, recorded once (no duplicate remediation).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest

from tests.support import response as r
from tests.support.controlplane import Cluster
from tests.support.load import (
    AlertKey,
    ReceiverProcess,
    Sender,
    alert_counts,
    expected_key,
    keyed,
    list_alerts,
    metric,
    post,
    receiver_account,
)
from tests.support.processes import wait_for
from tests.unit.factories import make_raw_event

pytestmark = pytest.mark.slow

OUTAGE_SECONDS = 60.0
SHELL = "Terminal shell in container"
# 20 events/s: a repeating shell alert, repeats of four other alerts, and (below) one new
# alert a second. Modest on purpose: the point is the outage, not the load.
RATE = 20.0
# kopf re-establishes its watches on its own schedule after the API server returns; client-go
# informers take up to a minute (docs/development.md). Generous, but bounded.
RECOVERY_SECONDS = 90.0
# The factory's events carry a 2024 timestamp, older than any retention age: the operator
# sweeps when it starts (before they exist), then not again within the hour.
KEEP_OLD_ALERTS = {"FALCO_TRIAGE_OPERATOR__RETENTION__SWEEP_INTERVAL_SECONDS": "3600"}
# Falco reports a container's short id; isolation acts only on a pod still running it.
WEB0_CONTAINER, WEB1_CONTAINER = "3f1c9a2b7d4e", "9a8b7c6d5e4f"


def _runs(container_id: str) -> dict[str, Any]:
    return {"container.id": container_id}


def _running_pod(cluster: Cluster, namespace: str, name: str, container_id: str) -> None:
    """A pod whose status says it runs ``container_id`` (no kubelet here to say so)."""
    r.create_pod(cluster, namespace, name, labels={"app": "web"})
    status = {
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "app",
                    "image": "registry.example/app:1",
                    "imageID": "",
                    "containerID": f"containerd://{container_id}{'0' * 52}",
                    "ready": True,
                    "restartCount": 0,
                    "started": True,
                    "state": {"running": {"startedAt": "2024-05-14T09:00:00Z"}},
                }
            ],
        }
    }
    cluster.kubectl(
        "patch", "pod", name, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps(status),
    )  # fmt: skip


def test_apiserver_outage_under_load_loses_nothing_and_remediates_once(
    control_plane: Cluster, namespace: str
) -> None:
    if not control_plane.can_restart_apiserver:
        pytest.skip(f"the API server cannot be restarted in {control_plane.mode} mode")
    own = r.new_namespace(control_plane, "ft-op")
    started = time.monotonic()
    shell = make_raw_event(SHELL, namespace=namespace, pod="web-0", **_runs(WEB0_CONTAINER))
    others = [
        make_raw_event("Read sensitive file untrusted", namespace=namespace, pod=f"db-{i}")
        for i in range(4)
    ]
    try:
        _running_pod(control_plane, namespace, "web-0", WEB0_CONTAINER)
        with (
            receiver_account(control_plane) as account,
            ReceiverProcess(account.kubeconfig, own, settings={"shutdown_flush_seconds": 5}) as rx,
            r.response_operator(control_plane, own, env=KEEP_OLD_ALERTS) as operator,
        ):
            r.create_policy(control_plane, r.policy("isolate", namespace, [r.isolate_action()]))
            steady = Sender(
                rx.port,
                keyed([shell, *others], own),
                rate=RATE,
                seconds=OUTAGE_SECONDS + 90,
                name="steady",
            )
            steady.start()
            new_alerts: Counter[AlertKey] = Counter()
            shed_at_once = 0
            try:
                shell_key = expected_key(shell, own)
                r.wait_for_phase(control_plane, namespace, shell_key[1], "Remediated")
                r.wait_for_events(control_plane, namespace, shell_key[1], "ActionApplied")
                assert len(r.network_policies(control_plane, namespace)) == 1

                before_outage = steady.snapshot()
                control_plane.stop_apiserver()
                try:
                    # One new alert a second while the API server is down; the receiver must
                    # keep acknowledging everything and stay ready (its buffer has room).
                    down_since = time.monotonic()
                    tick = 0
                    while time.monotonic() - down_since < OUTAGE_SECONDS:
                        event = make_raw_event(
                            "Read sensitive file untrusted", namespace=namespace, pod=f"new-{tick}"
                        )
                        answer = post(rx.port, _body(event), timeout=10)
                        assert answer.status == 200, answer.body
                        shed_at_once += answer.json()["shed"]
                        new_alerts[expected_key(event, own)] += answer.json()["accepted"]
                        tick += 1
                        ready = post(rx.port, b"", method="GET", path="/readyz", token=None)
                        assert ready.status == 200, ready.body
                        time.sleep(max(down_since + tick - time.monotonic(), 0))
                    outage_tally = steady.snapshot()
                finally:
                    control_plane.start_apiserver()
                restarted = time.monotonic()

                # Watches recover: a pod and an alert that first exist after the restart.
                _running_pod(control_plane, namespace, "web-1", WEB1_CONTAINER)
                late = make_raw_event(
                    SHELL, namespace=namespace, pod="web-1", **_runs(WEB1_CONTAINER)
                )
                answer = post(rx.port, _body(late), timeout=10)
                assert answer.status == 200, answer.body
                late_key = expected_key(late, own)
                new_alerts[late_key] += 1
                late_status = r.wait_for_phase(
                    control_plane, namespace, late_key[1], "Remediated", timeout=RECOVERY_SECONDS
                )
                recovered = time.monotonic() - restarted
                assert operator.proc is not None
                assert operator.proc.poll() is None, "the operator died in the outage"
                assert rx.alive(), "the receiver died in the outage"
            finally:
                steady.stop()
                steady.join(30)

            # Every acknowledged event is counted: sum of occurrences + shed == acknowledged.
            acked = steady.tally.accepted + sum(new_alerts.values())
            shed_at_once += steady.tally.shed

            def settled() -> dict[AlertKey, int] | None:
                counts = alert_counts(control_plane, [namespace, own])
                shed = metric(rx.metrics(), "events_shed_total")
                return counts if sum(counts.values()) + shed == acked else None

            counts = wait_for(
                settled,
                timeout=RECOVERY_SECONDS,
                what="every acknowledged event counted",
                interval=1.0,
            )
            final = rx.metrics()
            alerts = list_alerts(control_plane, [namespace])
            shell_status = alerts[shell_key]["status"]
    finally:
        r.delete(control_plane, "namespace", own)

    assert steady.tally.errors == [], steady.tally.errors[:3]
    assert set(steady.tally.statuses) == {200}, steady.tally.statuses
    during = outage_tally[0] - before_outage[0]
    assert during > RATE * OUTAGE_SECONDS * 0.8, f"only {during} events acknowledged in the outage"
    # Nothing was shed here (the buffer never filled), so per alert the counts are exact too.
    assert metric(final, "events_shed_total") == shed_at_once == 0
    expected = steady.tally.acked.copy()
    expected.update(new_alerts)
    assert counts == dict(expected)
    assert metric(final, "events_dropped_total") == 0

    # One NetworkPolicy per isolated pod, each recorded once.
    policies = r.network_policies(control_plane, namespace)
    assert len(policies) == 2, [p["metadata"]["name"] for p in policies]
    for status in (shell_status, late_status):
        records = (status.get("remediation") or {}).get("actions") or []
        assert [rec["name"] for rec in records] == ["isolate"]
        assert records[0]["result"] == "Applied"
    applied = r.events_for(control_plane, namespace, shell_key[1], "ActionApplied")
    assert len(applied) == 1, [e.get("message") for e in applied]
    print(  # shown with -s
        f"outage: {acked} events acknowledged ({sum(new_alerts.values())} new alerts), "
        f"watches recovered {recovered:.1f} s after the restart, "
        f"test took {time.monotonic() - started:.0f} s"
    )


def _body(event: dict[str, object]) -> bytes:
    return json.dumps(event).encode()

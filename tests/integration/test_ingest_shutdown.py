"""``falco-triage ingest`` as the Deployment runs it (its own process, SIGTERM to stop): on
SIGTERM it stops listening, writes what it had acknowledged before exiting — even when the rate
limiter made it wait — and when the API server is unreachable it logs every alert it could not
write instead of dropping them silently."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_ingest_alerts import expected_key, receiver_kubeconfig  # noqa: F401
from tests.support.controlplane import Cluster
from tests.support.processes import Service, free_port, wait_for
from tests.unit.factories import TEST_TOKEN, make_raw_event


def receiver_service(kubeconfig: Path, namespace: str, **settings: str) -> Service:
    port = free_port()
    env = {
        "KUBECONFIG": str(kubeconfig),
        "PYTHONUNBUFFERED": "1",
        "FALCO_TRIAGE_NAMESPACE": namespace,
        "FALCO_TRIAGE_INGEST__HOST": "127.0.0.1",
        "FALCO_TRIAGE_INGEST__TOKEN": TEST_TOKEN,
        **{f"FALCO_TRIAGE_INGEST__{k.upper()}": v for k, v in settings.items()},
    }
    service = Service(
        "ingest", ["ingest", "--port", str(port)], env, f"http://127.0.0.1:{port}/healthz"
    )
    service.url = f"http://127.0.0.1:{port}/v1/events"  # type: ignore[attr-defined]
    return service


def post(service: Service, body: Any) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - our own http://127.0.0.1 URL
        service.url,  # type: ignore[attr-defined]
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TEST_TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        assert response.status == 200
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def counts(cluster: Cluster, namespace: str) -> dict[tuple[str, str], int]:
    out = cluster.kubectl("get", "falcoalerts", "-n", namespace, "-o", "json").stdout
    return {
        (namespace, item["metadata"]["name"]): item["status"]["occurrences"]["count"]
        for item in json.loads(out)["items"]
        if (item.get("status") or {}).get("occurrences")
    }


@pytest.fixture
def events(namespace: str) -> list[dict[str, Any]]:
    return [make_raw_event(namespace=namespace, pod=f"web-{i}") for i in range(8)]


def test_sigterm_writes_everything_acknowledged_before_exiting(
    control_plane: Cluster,
    namespace: str,
    receiver_kubeconfig: Path,  # noqa: F811
    events: list[dict[str, Any]],
) -> None:
    # Two writes per new alert at 2 writes/s: the buffer is still full when SIGTERM arrives.
    with receiver_service(
        receiver_kubeconfig, namespace, write_qps="2", write_burst="1", shutdown_flush_seconds="60"
    ) as service:
        for event in events:
            assert post(service, [event] * 3)["accepted"] == 3
        assert counts(control_plane, namespace) != {expected_key(e, namespace): 3 for e in events}
        assert service.stop(grace=90) == 0
        log = service.log(400)
    assert counts(control_plane, namespace) == {expected_key(e, namespace): 3 for e in events}
    assert "write queue flushed; nothing left unwritten" in log


@pytest.mark.slow
def test_sigterm_with_the_api_server_down_logs_what_was_not_written(
    control_plane: Cluster,
    namespace: str,
    receiver_kubeconfig: Path,  # noqa: F811
    events: list[dict[str, Any]],
) -> None:
    with receiver_service(receiver_kubeconfig, namespace, shutdown_flush_seconds="3") as service:
        post(service, events[0])
        wait_for(lambda: counts(control_plane, namespace), timeout=30, what="the first alert")
        control_plane.stop_apiserver()
        try:
            for event in events[1:]:
                assert post(service, [event] * 2)["accepted"] == 2
            assert service.stop(grace=60) == 0
            log = service.log(400)
        finally:
            control_plane.start_apiserver()
    assert "shutdown left 14 events in 7 alerts unwritten" in log
    for event in events[1:]:
        name = expected_key(event, namespace)[1]
        assert "unwritten at shutdown: 2 events of rule 'Terminal shell in container'" in log
        assert name in log

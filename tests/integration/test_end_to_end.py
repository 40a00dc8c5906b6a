"""The whole flow with real processes, as installed: `falco-triage ingest` receives the bundled
attack-chain events (NDJSON, bearer token), stores them as FalcoAlerts in the workload's
namespace, and `falco-triage run` analyzes each; an unauthenticated post is refused and changes
nothing; `kubectl get falcoalerts` shows the result."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.controlplane import Cluster
from tests.support.processes import Service, free_port, operator_service, wait_for

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "e2e-receiver-token-0123456789abcdef"


def _events_for(namespace: str) -> bytes:
    """The bundled attack chain, moved into the test's namespace."""
    lines = []
    for line in (ROOT / "examples" / "events" / "attack-chain.ndjson").read_text().splitlines():
        event: dict[str, Any] = json.loads(line)
        fields = event["output_fields"]
        for key in ("k8s.ns.name", "ka.target.namespace"):
            if key in fields:
                fields[key] = namespace
        lines.append(json.dumps(event))
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def receiver(control_plane: Cluster, namespace: str) -> Iterator[str]:
    port = free_port()
    env = {
        "KUBECONFIG": str(control_plane.kubeconfig),
        "FALCO_TRIAGE_NAMESPACE": namespace,
        "FALCO_TRIAGE_INGEST__TOKEN": TOKEN,
        "FALCO_TRIAGE_INGEST__HOST": "127.0.0.1",
        "FALCO_TRIAGE_INGEST__PORT": str(port),
        "PYTHONUNBUFFERED": "1",
    }
    url = f"http://127.0.0.1:{port}"
    with Service("receiver", ["ingest"], env, health_url=f"{url}/readyz"):
        yield url


def _post(url: str, body: bytes, token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/x-ndjson"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(  # noqa: S310 - a loopback http URL built here
        f"{url}/v1/events", data=body, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _alerts(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "falcoalerts", "-n", namespace, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def test_events_flow_from_receiver_to_analyzed_alerts(
    control_plane: Cluster, namespace: str, receiver: str
) -> None:
    status, body = _post(receiver, _events_for(namespace), token="wrong-token")
    assert status == 401, body
    assert _alerts(control_plane, namespace) == []

    with operator_service(control_plane.kubeconfig, env={"FALCO_TRIAGE_NAMESPACE": namespace}):
        status, body = _post(receiver, _events_for(namespace), token=TOKEN)
        assert status in (200, 202), body
        analyzed = wait_for(
            lambda: (
                (items := _alerts(control_plane, namespace))
                and len(items) == 4
                and all((i.get("status") or {}).get("analysis") for i in items)
                and items
            ),
            timeout=60,
            what="four analyzed FalcoAlerts",
        )
    rules = sorted(a["spec"]["rule"] for a in analyzed)
    assert rules == sorted(
        [
            "Terminal shell in container",
            "Read sensitive file untrusted",
            "Clear Log Activities",
            "Create Privileged Pod",
        ]
    )
    for alert in analyzed:
        assert alert["status"]["occurrences"]["count"] == 1
        assert alert["status"]["report"].startswith("# Falco alert: ")
    table = control_plane.kubectl("get", "falcoalerts", "-n", namespace).stdout
    assert "Clear Log Activities" in table
    assert "No matching policy" in table  # no ResponsePolicy here: analyzed, nothing done

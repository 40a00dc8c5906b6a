"""The receiver on the real control plane, with the chart's receiver RBAC (and nothing more):
N distinct events become N FalcoAlerts in the right namespaces (the pod's, the audited object's,
the operator's for host events and for namespaces that do not exist), each counted once; an
invalid token gets 401 and creates nothing."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from falco_triage.events.fingerprint import alert_name, alert_spec
from falco_triage.events.normalize import normalize_event
from falco_triage.events.parse import Limits
from tests.support.controlplane import Cluster
from tests.unit.factories import make_raw_event, receiver_settings, start_test_receiver

REPO = Path(__file__).resolve().parents[2]
RECEIVER_RBAC = REPO / "charts" / "falco-triage" / "templates" / "rbac-receiver.yaml"
WAIT_SECONDS = 60.0


def chart_receiver_rules() -> list[dict[str, Any]]:
    """The receiver ClusterRole's rules, read from the chart template (template lines dropped)."""
    text = RECEIVER_RBAC.read_text().split("\n---", 1)[0]
    plain = "\n".join(line for line in text.splitlines() if "{{" not in line)
    rules: list[dict[str, Any]] = yaml.safe_load(plain)["rules"]
    return rules


@pytest.fixture(scope="module")
def receiver_kubeconfig(control_plane: Cluster) -> Iterator[Path]:
    """Credentials of a ServiceAccount bound to exactly the chart's receiver ClusterRole."""
    suffix = uuid.uuid4().hex[:8]
    namespace, role = f"ft-ingest-{suffix}", f"falco-triage-receiver-{suffix}"
    control_plane.kubectl("create", "namespace", namespace)
    control_plane.kubectl("create", "serviceaccount", "receiver", "-n", namespace)
    objects = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": role},
            "rules": chart_receiver_rules(),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": role},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"kind": "ServiceAccount", "name": "receiver", "namespace": namespace}],
        },
    ]
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    token = control_plane.create_token(namespace, "receiver")
    yield control_plane.kubeconfig_for_token(token, f"receiver-{suffix}")
    control_plane.kubectl("delete", "clusterrolebinding,clusterrole", role, "--ignore-not-found")
    control_plane.kubectl("delete", "namespace", namespace, "--wait=false")


@pytest.fixture
def app_namespaces(control_plane: Cluster) -> Iterator[list[str]]:
    names = [f"ft-app-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for name in names:
        control_plane.kubectl("create", "namespace", name)
    yield names
    for name in names:
        control_plane.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


async def list_alerts(cluster: Cluster, namespaces: list[str]) -> dict[tuple[str, str], Any]:
    """Every FalcoAlert in ``namespaces``, by (namespace, name); kubectl runs off the loop so
    the receiver under test keeps working meanwhile."""
    result = await asyncio.to_thread(cluster.kubectl, "get", "falcoalerts", "-A", "-o", "json")
    items = json.loads(result.stdout)["items"]
    return {
        (i["metadata"]["namespace"], i["metadata"]["name"]): i
        for i in items
        if i["metadata"]["namespace"] in namespaces
    }


async def wait_for_alerts(
    cluster: Cluster, namespaces: list[str], expected: dict[tuple[str, str], int]
) -> dict[tuple[str, str], Any]:
    """Until exactly ``expected`` alerts exist with those counts (bounded by WAIT_SECONDS)."""
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while True:
        alerts = await list_alerts(cluster, namespaces)
        counts = {
            key: ((a.get("status") or {}).get("occurrences") or {}).get("count")
            for key, a in alerts.items()
        }
        if counts == expected:
            return alerts
        if asyncio.get_running_loop().time() > deadline:
            missing = {k: v for k, v in expected.items() if counts.get(k) != v}
            extra = {k: v for k, v in counts.items() if k not in expected}
            raise AssertionError(f"alerts not as expected: missing/wrong {missing}, extra {extra}")
        await asyncio.sleep(0.25)


def expected_key(raw: dict[str, Any], namespace: str) -> tuple[str, str]:
    spec = alert_spec(normalize_event(raw, Limits()), "unused")
    return namespace, alert_name(spec)


async def test_distinct_events_become_alerts_in_the_right_namespaces(
    control_plane: Cluster, namespace: str, app_namespaces: list[str], receiver_kubeconfig: Path
) -> None:
    shop, payments = app_namespaces
    missing_ns = f"ft-gone-{uuid.uuid4().hex[:8]}"
    cases: list[tuple[dict[str, Any], str]] = []
    for i in range(10):
        cases.append((make_raw_event(namespace=shop, pod=f"web-{i}"), shop))
        cases.append(
            (
                make_raw_event("Read sensitive file untrusted", namespace=payments, pod=f"api-{i}"),
                payments,
            )
        )
    for host in ("worker-1", "worker-2", "worker-3"):
        cases.append(
            (
                make_raw_event("Launch Suspicious Network Tool on Host", host=True, hostname=host),
                namespace,
            )
        )
    cases.append((make_raw_event("Attach/Exec Pod", namespace=payments, sidekick=True), payments))
    cases.append((make_raw_event("K8s Secret Get Successfully", namespace=shop), shop))
    cases.append(
        (
            make_raw_event("Create/Modify Configmap With Private Credentials", namespace=None),
            namespace,
        )
    )
    cases.append((make_raw_event(namespace=missing_ns, pod="orphan"), namespace))
    expected = {expected_key(raw, ns): 1 for raw, ns in cases}
    assert len(expected) == len(cases) == 27

    settings = receiver_settings(namespace, write_qps=50.0, write_burst=20)
    async with start_test_receiver(settings, receiver_kubeconfig) as receiver:
        for raw, _ in cases[:20]:  # one event per request, as Falco and Falcosidekick send
            assert (await receiver.post(raw))[0] == 200
        status, body = await receiver.post([raw for raw, _ in cases[20:]])  # and a batch
        assert (status, body["accepted"]) == (200, 7)
        alerts = await wait_for_alerts(control_plane, [namespace, *app_namespaces], expected)

    for (ns, _), alert in alerts.items():
        assert alert["status"]["phase"] == "Received"
        assert alert["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "falco-triage"
        assert re.fullmatch(r"[0-9a-f]{64}", alert["spec"]["fingerprint"])
        if ns == shop and alert["spec"]["source"] == "syscall":
            assert alert["spec"]["target"]["kind"] == "Pod"
    orphan = alerts[expected_key(cases[-1][0], namespace)]
    assert orphan["spec"]["target"]["namespace"] == missing_ns  # facts kept, stored safely


async def test_invalid_token_gets_401_and_creates_nothing(
    control_plane: Cluster, namespace: str, receiver_kubeconfig: Path
) -> None:
    refused = make_raw_event(namespace=namespace, pod="refused")
    sentinel = make_raw_event(namespace=namespace, pod="sentinel")
    async with start_test_receiver(receiver_settings(namespace), receiver_kubeconfig) as receiver:
        for token in ("wrong-token-0123456789abcdef", ""):
            status, body = await receiver.post(refused, token=token)
            assert (status, body["error"]["code"]) == (401, "unauthorized")
        assert receiver.metric("events_accepted") == 0
        # The sentinel is a barrier: once it is written, anything accepted before it would be.
        assert (await receiver.post(sentinel))[0] == 200
        await wait_for_alerts(control_plane, [namespace], {expected_key(sentinel, namespace): 1})
    assert expected_key(refused, namespace) not in await list_alerts(control_plane, [namespace])

"""The actions that touch more than the pod, on the real API server.

deletePod: refused (Skipped, with the reason) for a pod no controller would recreate, done for
a controlled pod, and done for a bare pod when the policy sets allowBarePods. scaleWorkload:
finds the Deployment through the pod's ReplicaSet, scales it to zero through the scale
subresource recording the replicas, and the ttl restores them. notify: posts a Slack-style
message to a webhook whose URL is read from a Secret in the operator's namespace, and the URL
appears nowhere in the alert.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support import response as r
from tests.support.controlplane import Cluster
from tests.support.processes import Service, wait_for
from tests.support.webhook import WebhookReceiver


@pytest.fixture(scope="module")
def own_namespace(control_plane: Cluster) -> Iterator[str]:
    name = r.new_namespace(control_plane, "ft-op")
    yield name
    r.delete(control_plane, "namespace", name)


@pytest.fixture(scope="module")
def operator(control_plane: Cluster, own_namespace: str) -> Iterator[Service]:
    with r.response_operator(control_plane, own_namespace) as service:
        yield service


def test_delete_pod_is_refused_for_bare_pods_and_done_for_controlled_ones(
    control_plane: Cluster, operator: Service, namespace: str
) -> None:
    r.create_pod(control_plane, namespace, "bare")
    _, owned = r.create_deployment(control_plane, namespace, "web")
    r.create_policy(control_plane, r.policy("delete", namespace, [r.delete_action()]))

    r.create(control_plane, r.alert("bare-shell", namespace, "bare"))
    status = r.wait_for_phase(control_plane, namespace, "bare-shell", "NoAction")
    record = r.records(status)["delete"]
    assert record["result"] == "Skipped"
    assert "allowBarePods" in record["message"]
    assert r.get(control_plane, "pod", "bare", namespace) is not None

    pod_name = owned["metadata"]["name"]
    r.create(control_plane, r.alert("owned-shell", namespace, pod_name))
    status = r.wait_for_phase(control_plane, namespace, "owned-shell", "Remediated")
    assert r.records(status)["delete"]["result"] == "Applied"
    wait_for(
        lambda: r.get(control_plane, "pod", pod_name, namespace) is None,
        timeout=r.RESPONSE_TIMEOUT,
        what="the controlled pod to be deleted",
    )


def test_delete_pod_deletes_a_bare_pod_when_allowed(
    control_plane: Cluster, operator: Service, namespace: str
) -> None:
    r.create_pod(control_plane, namespace, "bare")
    action = r.delete_action(allowBarePods=True, gracePeriodSeconds=0)
    r.create_policy(control_plane, r.policy("delete", namespace, [action]))
    r.create(control_plane, r.alert("shell", namespace, "bare"))
    status = r.wait_for_phase(control_plane, namespace, "shell", "Remediated")
    assert r.records(status)["delete"]["result"] == "Applied"
    wait_for(
        lambda: r.get(control_plane, "pod", "bare", namespace) is None,
        timeout=r.RESPONSE_TIMEOUT,
        what="the bare pod to be deleted",
    )


def test_scale_workload_to_zero_and_back_after_the_ttl(
    control_plane: Cluster, operator: Service, namespace: str
) -> None:
    deployment, owned = r.create_deployment(control_plane, namespace, "web", replicas=3)
    r.create_policy(control_plane, r.policy("scale", namespace, [r.scale_action()], ttl="3s"))
    r.create(control_plane, r.alert("shell", namespace, owned["metadata"]["name"]))

    status = r.wait_for_phase(control_plane, namespace, "shell", ["Remediated", "RolledBack"])
    record = r.records(status)["scale"]
    assert record["rollback"] == {"kind": "Deployment", "name": "web", "replicas": "3"}
    assert record["objects"] == [
        {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": namespace, "name": "web"}
    ]
    assert "patch" in record["planned"]

    status = r.wait_for_phase(control_plane, namespace, "shell", "RolledBack")
    assert r.records(status)["scale"]["result"] == "RolledBack"
    assert "expiresAt" not in status["remediation"]
    assert r.replicas(control_plane, namespace, "web") == 3
    scaled = r.get(control_plane, "deployment", "web", namespace)
    # Only the scale subresource was written: the pod template is untouched.
    assert scaled["spec"]["template"] == deployment["spec"]["template"]
    r.wait_for_events(control_plane, namespace, "shell", "ActionRolledBack")


def test_scale_workload_scales_to_zero(
    control_plane: Cluster, operator: Service, namespace: str
) -> None:
    _, owned = r.create_deployment(control_plane, namespace, "api", replicas=2)
    r.create_policy(control_plane, r.policy("scale", namespace, [r.scale_action()]))
    r.create(control_plane, r.alert("shell", namespace, owned["metadata"]["name"]))
    status = r.wait_for_phase(control_plane, namespace, "shell", "Remediated")
    assert r.records(status)["scale"]["result"] == "Applied"
    assert r.replicas(control_plane, namespace, "api") == 0


def test_notify_posts_to_the_webhook_from_the_operators_secret(
    control_plane: Cluster, operator: Service, own_namespace: str, namespace: str
) -> None:
    r.create_pod(control_plane, namespace, "web-0")
    with WebhookReceiver() as hook:
        r.create_secret(control_plane, own_namespace, "security-hook", url=hook.url)
        action = r.notify_action(
            event=True, webhookSecretRef={"name": "security-hook", "key": "url"}
        )
        r.create_policy(control_plane, r.policy("page", namespace, [action]))
        r.create(control_plane, r.alert("shell", namespace, "web-0"))

        status = r.wait_for_phase(control_plane, namespace, "shell", "Remediated")
        record = r.records(status)["notify"]
        assert record["result"] == "Applied"
        assert "HTTP 200" in record["message"]
        (message,) = wait_for(lambda: hook.received, timeout=10, what="the webhook call")
    assert set(message) == {"text"}
    assert "Terminal shell in container" in message["text"]
    assert f"`{namespace}/web-0`" in message["text"]
    assert hook.token not in json.dumps(status)
    assert len(r.events_for(control_plane, namespace, "shell", "PolicyNotify")) == 1

"""Rollback on the real API server: when the policy's ttl expires, and when the alert is deleted.

TTL: labels come off the pod, the isolating NetworkPolicy is deleted, records become
RolledBack, phase RolledBack, and the alert's finalizer is released. Deletion: the finalizer
(present only on alerts with applied reversible actions) holds the alert until labels and
annotations are removed and replicas restored; the NetworkPolicy goes with its owner. An alert
on which nothing was done carries no finalizer and is deleted at once.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import response as r
from tests.support.controlplane import Cluster
from tests.support.processes import Service, wait_for

FINALIZER = "falcotriage.io/finalizer"


@pytest.fixture(scope="module")
def operator(control_plane: Cluster) -> Iterator[Service]:
    own = r.new_namespace(control_plane, "ft-op")
    with r.response_operator(control_plane, own) as service:
        yield service
    r.delete(control_plane, "namespace", own)


def _finalizers(cluster: Cluster, namespace: str, name: str) -> list[str]:
    found = r.get(cluster, "falcoalert", name, namespace)
    return list(((found or {}).get("metadata") or {}).get("finalizers") or [])


def test_ttl_expiry_rolls_back_labels_and_isolation(
    control_plane: Cluster, operator: Service, namespace: str
) -> None:
    r.create_pod(control_plane, namespace, "web-0", labels={"app": "web", "tier": "front"})
    actions = [r.label_action(tier="quarantined"), r.isolate_action()]
    r.create_policy(control_plane, r.policy("isolate", namespace, actions, ttl="2s"))
    r.create(control_plane, r.alert("shell", namespace, "web-0"))

    status = r.wait_for_phase(control_plane, namespace, "shell", ["Remediated", "RolledBack"])
    assert status["remediation"].get("expiresAt") or status["phase"] == "RolledBack"

    status = r.wait_for_phase(control_plane, namespace, "shell", "RolledBack")
    records = r.records(status)
    assert {rec["result"] for rec in records.values()} == {"RolledBack"}
    assert all(rec.get("rolledBackAt") for rec in records.values())
    assert "expiresAt" not in status["remediation"]
    # The overwritten label gets its old value back; the isolation label is removed.
    assert r.pod_labels(control_plane, namespace, "web-0") == {"app": "web", "tier": "front"}
    assert r.network_policies(control_plane, namespace) == []
    wait_for(
        lambda: FINALIZER not in _finalizers(control_plane, namespace, "shell"),
        timeout=r.RESPONSE_TIMEOUT,
        what="the finalizer to be released after rollback",
    )


def test_deleting_the_alert_rolls_back_first(
    control_plane: Cluster, operator: Service, namespace: str
) -> None:
    _, owned = r.create_deployment(control_plane, namespace, "web", replicas=2)
    pod_name = owned["metadata"]["name"]
    actions = [r.label_action(), r.annotate_action(), r.isolate_action(), r.scale_action()]
    r.create_policy(control_plane, r.policy("contain", namespace, actions))
    r.create(control_plane, r.alert("shell", namespace, pod_name))
    r.wait_for_phase(control_plane, namespace, "shell", "Remediated")
    assert FINALIZER in _finalizers(control_plane, namespace, "shell")
    assert r.replicas(control_plane, namespace, "web") == 0
    assert len(r.network_policies(control_plane, namespace)) == 1

    r.delete(control_plane, "falcoalert", "shell", namespace)
    wait_for(
        lambda: r.get(control_plane, "falcoalert", "shell", namespace) is None,
        timeout=r.RESPONSE_TIMEOUT,
        what="the alert to be rolled back and deleted",
    )
    pod = r.get(control_plane, "pod", pod_name, namespace)
    assert pod["metadata"]["labels"] == {"app": "web"}
    assert "falcotriage.io/reason" not in (pod["metadata"].get("annotations") or {})
    assert r.replicas(control_plane, namespace, "web") == 2
    wait_for(
        lambda: r.network_policies(control_plane, namespace) == [],
        timeout=r.RESPONSE_TIMEOUT,
        what="the NetworkPolicy to go with its owner",
    )


def test_alert_without_actions_has_no_finalizer(
    control_plane: Cluster, operator: Service, namespace: str
) -> None:
    r.create_pod(control_plane, namespace, "web-0")
    r.create_policy(
        control_plane,
        r.policy("notify", namespace, [r.notify_action()], match={"rules": ["Other rule"]}),
    )
    r.create(control_plane, r.alert("shell", namespace, "web-0"))
    status = r.wait_for_phase(control_plane, namespace, "shell", "NoAction")
    assert status["decision"]["outcome"] == "NoMatch"
    assert "Other rule" in status["decision"]["reason"]
    assert _finalizers(control_plane, namespace, "shell") == []
    # No finalizer: the API server deletes it at once, whatever the operator does.
    control_plane.kubectl("delete", "falcoalert", "shell", "-n", namespace, "--timeout=20s")
    assert r.get(control_plane, "falcoalert", "shell", namespace) is None

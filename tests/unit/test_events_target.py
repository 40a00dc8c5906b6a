"""Target resolution: pod events go to the pod's namespace, audit events to the object's
namespace, host-level and cluster-scoped events keep the hostname (or object) as target and go
to the operator's namespace; a malformed namespace can never direct a write elsewhere."""

from __future__ import annotations

import pytest

from falco_triage.events.target import alert_namespace, resolve_target, valid_namespace
from falco_triage.models.alert import TargetKind
from tests.unit.factories import make_event

OPERATOR_NS = "falco-triage"


def test_pod_event_targets_the_pod_in_its_namespace() -> None:
    target = resolve_target(make_event(namespace="payments", pod="api-1"), OPERATOR_NS)
    assert target.kind is TargetKind.POD
    assert (target.namespace, target.pod) == ("payments", "api-1")
    assert target.container_name == "nginx"
    assert target.container_id == "3f1c9a2b7d4e"
    assert target.image == "docker.io/library/nginx:1.25.3"
    assert target.node == "worker-1"
    assert target.display == "payments/api-1"
    assert alert_namespace(target, OPERATOR_NS) == "payments"


def test_host_event_keeps_the_hostname_and_goes_to_the_operator_namespace() -> None:
    event = make_event("Launch Suspicious Network Tool on Host", host=True, hostname="worker-7")
    target = resolve_target(event, OPERATOR_NS)
    assert target.kind is TargetKind.HOST
    assert target.display == "worker-7"
    assert target.node == "worker-7"
    assert (target.namespace, target.pod, target.container_id) == (None, None, None)
    assert alert_namespace(target, OPERATOR_NS) == OPERATOR_NS


def test_container_outside_kubernetes_is_a_host_target_naming_the_container() -> None:
    event = make_event(namespace=None, pod=None, hostname="build-box")
    target = resolve_target(event, OPERATOR_NS)
    assert target.kind is TargetKind.HOST
    assert target.display == "build-box/nginx"
    assert target.container_id == "3f1c9a2b7d4e"
    assert alert_namespace(target, OPERATOR_NS) == OPERATOR_NS


def test_missing_hostname() -> None:
    event = make_event(host=True, hostname=None)
    assert resolve_target(event, OPERATOR_NS).display == "unknown-host"


def test_audit_event_targets_the_object_in_its_namespace() -> None:
    target = resolve_target(make_event("Attach/Exec Pod", namespace="payments"), OPERATOR_NS)
    assert target.kind is TargetKind.KUBERNETES_OBJECT
    assert target.namespace == "payments"
    assert (target.resource, target.resource_name) == ("pods", "web-7d9f8c6b5-x2kqp")
    assert target.pod == "web-7d9f8c6b5-x2kqp"
    assert target.display == "payments/pods/exec/web-7d9f8c6b5-x2kqp"
    assert alert_namespace(target, OPERATOR_NS) == "payments"


def test_cluster_scoped_audit_event_goes_to_the_operator_namespace() -> None:
    event = make_event("Create/Modify Configmap With Private Credentials", namespace=None)
    target = resolve_target(event, OPERATOR_NS)
    assert target.namespace is None
    assert alert_namespace(target, OPERATOR_NS) == OPERATOR_NS


@pytest.mark.parametrize(
    "bad", ["../kube-system", "Kube-System", "a" * 64, "-x", "x-", "ns with space", "", "<NA>"]
)
def test_invalid_namespace_falls_back_to_the_operator_namespace(bad: str) -> None:
    target = resolve_target(make_event(namespace=bad), OPERATOR_NS)
    assert target.kind is TargetKind.HOST
    assert alert_namespace(target, OPERATOR_NS) == OPERATOR_NS
    assert not valid_namespace(bad)


@pytest.mark.parametrize("good", ["default", "kube-system", "a", "team-1", "a" * 63])
def test_valid_namespaces(good: str) -> None:
    assert valid_namespace(good)


def test_long_values_fit_the_target_model() -> None:
    event = make_event(pod="p" * 300, **{"container.image.repository": "r" * 2000})
    target = resolve_target(event, OPERATOR_NS)
    assert len(target.pod or "") == 253
    assert len(target.image or "") <= 1024
    assert len(target.display) <= 512

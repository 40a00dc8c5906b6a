"""Safety rules hold on the real API server whatever a policy says.

An alert in the operator's own namespace (protected; the operator runs with
``FALCO_TRIAGE_NAMESPACE`` set to a test namespace) or in a namespace labelled
``falcotriage.io/ignore`` gets a Refused decision and nothing is touched. An invalid policy
gets ``Valid=False`` and is ignored while a valid one in the same namespace still acts. A
policy over its rate limit gets RateLimited and acts no more.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support import response as r
from tests.support.controlplane import Cluster
from tests.support.processes import Service


@pytest.fixture(scope="module")
def own_namespace(control_plane: Cluster) -> Iterator[str]:
    name = r.new_namespace(control_plane, "ft-op")
    yield name
    r.delete(control_plane, "namespace", name)


@pytest.fixture(scope="module")
def operator(control_plane: Cluster, own_namespace: str) -> Iterator[Service]:
    with r.response_operator(control_plane, own_namespace) as service:
        yield service


def test_the_operators_own_namespace_is_protected(
    control_plane: Cluster, operator: Service, own_namespace: str
) -> None:
    r.create_pod(control_plane, own_namespace, "web-0", labels={"app": "web"})
    name = f"ft-protect-{uuid.uuid4().hex[:8]}"
    # A glob may name protected namespaces (protection applies at decision time); a literal
    # name would make the policy invalid.
    body = r.policy(
        name,
        None,
        [r.label_action()],
        match={"rules": [r.RULE], "namespaces": [own_namespace + "*"]},
    )
    r.create_policy(control_plane, body)
    try:
        r.create(control_plane, r.alert("shell", own_namespace, "web-0"))
        status = r.wait_for_phase(control_plane, own_namespace, "shell", "NoAction")
    finally:
        r.delete(control_plane, "clusterresponsepolicy", name)
    decision = status["decision"]
    assert decision["outcome"] == "Refused"
    assert decision["policy"] == f"ClusterResponsePolicy/{name}"
    assert f"Namespace '{own_namespace}' is protected" in decision["reason"]
    assert "remediation" not in status
    assert r.pod_labels(control_plane, own_namespace, "web-0") == {"app": "web"}


def test_a_namespace_that_opted_out_is_never_acted_on(
    control_plane: Cluster, operator: Service
) -> None:
    namespace = r.new_namespace(
        control_plane, "ft-optout", labels={"falcotriage.io/ignore": "true"}
    )
    try:
        r.create_pod(control_plane, namespace, "web-0", labels={"app": "web"})
        r.create_policy(control_plane, r.policy("label", namespace, [r.label_action()]))
        r.create(control_plane, r.alert("shell", namespace, "web-0"))
        status = r.wait_for_phase(control_plane, namespace, "shell", "NoAction")
        assert status["decision"]["outcome"] == "Refused"
        assert "has opted out" in status["decision"]["reason"]
        assert r.pod_labels(control_plane, namespace, "web-0") == {"app": "web"}
    finally:
        r.delete(control_plane, "namespace", namespace)


def test_an_invalid_policy_is_ignored_while_a_valid_one_acts(
    control_plane: Cluster, operator: Service, namespace: str
) -> None:
    r.create_pod(control_plane, namespace, "web-0", labels={"app": "web"})
    # Higher precedence, so it would win if it took part; its CIDR is not in network form.
    invalid = r.policy(
        "broken",
        namespace,
        [r.isolate_action(allowCidrs=["10.0.0.1/8"])],
        precedence=100,
    )
    r.create_policy(control_plane, invalid, valid=False)
    condition = r.valid_condition(r.policy_status(control_plane, "broken", namespace))
    assert condition is not None
    assert condition["reason"] == "Invalid"
    assert "allowCidrs[0]" in condition["message"]
    r.create_policy(control_plane, r.policy("label", namespace, [r.label_action()]))

    r.create(control_plane, r.alert("shell", namespace, "web-0"))
    status = r.wait_for_phase(control_plane, namespace, "shell", "Remediated")
    assert status["decision"]["policy"] == f"ResponsePolicy/{namespace}/label"
    assert r.pod_labels(control_plane, namespace, "web-0")["falcotriage.io/quarantine"] == "true"
    assert r.network_policies(control_plane, namespace) == []


def test_a_policy_over_its_rate_limit_stops_acting(
    control_plane: Cluster, operator: Service, namespace: str
) -> None:
    r.create_pod(control_plane, namespace, "web-0")
    r.create_pod(control_plane, namespace, "web-1")
    limited = r.policy(
        "label", namespace, [r.label_action()], rateLimit={"maxActions": 1, "window": "1h"}
    )
    r.create_policy(control_plane, limited)
    r.create(control_plane, r.alert("first", namespace, "web-0"))
    r.wait_for_phase(control_plane, namespace, "first", "Remediated")
    r.create(control_plane, r.alert("second", namespace, "web-1"))
    status = r.wait_for_phase(control_plane, namespace, "second", "NoAction")
    assert status["decision"]["outcome"] == "RateLimited"
    assert "falcotriage.io/quarantine" not in r.pod_labels(control_plane, namespace, "web-1")

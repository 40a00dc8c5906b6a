"""The operator, running as the chart's ServiceAccount with the chart's RBAC, responds fully.

The chart is rendered with a real helm (``actions.deletePod.enabled=false``,
``actions.scaleWorkload.enabled=true``, one webhook Secret allowed); its operator
ServiceAccount, ClusterRole, Role and bindings are applied, and the operator runs with a token
for that account. Every enabled action (labelPod, annotatePod, isolatePod, notify with an Event
and a webhook, scaleWorkload through pod -> ReplicaSet -> Deployment) succeeds with no Forbidden
anywhere, and a policy asking for the disabled deletePod gets a Forbidden record that names the
missing permission and the chart value that grants it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import response as r
from tests.support import tools
from tests.support.controlplane import Cluster
from tests.support.processes import Service, wait_for
from tests.support.webhook import WebhookReceiver

REPO_ROOT = Path(__file__).resolve().parents[2]
HOOK_SECRET = "security-hook"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


@dataclass
class ChartOperator:
    namespace: str
    service: Service
    hook: WebhookReceiver


def _render(release: str, namespace: str) -> list[dict[str, Any]]:
    result = tools.run_helm(
        REPO_ROOT,
        "template",
        release,
        str(tools.CHART_DIR),
        "--namespace",
        namespace,
        "--set",
        "actions.deletePod.enabled=false",
        "--set",
        "actions.scaleWorkload.enabled=true",
        "--set",
        f"actions.notify.secretNames={{{HOOK_SECRET}}}",
    )
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _rbac_denials(service: Service) -> list[str]:
    """Log lines where the API server refused the operator's account.

    RBAC denials read ``... is forbidden: User "system:serviceaccount:…" cannot …``; other 403s
    (such as Events refused in namespaces other tests are deleting) are not about RBAC.
    """
    log = service.log_path.read_text(encoding="utf-8", errors="replace")
    return [line for line in log.splitlines() if "system:serviceaccount:" in line]


@pytest.fixture(scope="module")
def chart_operator(control_plane: Cluster) -> Iterator[ChartOperator]:
    try:
        tools.helm_binary(REPO_ROOT)
    except tools.ToolError as err:
        pytest.skip(f"no helm: {err}")
    namespace = r.new_namespace(control_plane, "ft-rbac")
    release = f"ft-rbac-{uuid.uuid4().hex[:8]}"
    operator_name = f"{release}-falco-triage-operator"
    rbac = [
        doc
        for doc in _render(release, namespace)
        if doc["kind"] in RBAC_KINDS and doc["metadata"]["name"].startswith(operator_name)
    ]
    assert {d["kind"] for d in rbac} == RBAC_KINDS
    r.create(control_plane, *rbac)
    token = control_plane.create_token(namespace, operator_name)
    kubeconfig = control_plane.kubeconfig_for_token(token, operator_name)
    try:
        with (
            WebhookReceiver() as hook,
            r.response_operator(control_plane, namespace, kubeconfig=kubeconfig) as service,
        ):
            r.create_secret(control_plane, namespace, HOOK_SECRET, url=hook.url)
            yield ChartOperator(namespace, service, hook)
    finally:
        for doc in rbac:
            if doc["kind"].startswith("Cluster"):
                r.delete(control_plane, doc["kind"].lower(), doc["metadata"]["name"])
        r.delete(control_plane, "namespace", namespace)


def test_enabled_actions_succeed_with_the_charts_rbac(
    control_plane: Cluster, chart_operator: ChartOperator, namespace: str
) -> None:
    r.create_pod(control_plane, namespace, "web-0", labels={"app": "web"})
    actions = [
        r.label_action(),
        r.annotate_action(),
        r.isolate_action(),
        r.notify_action(event=True, webhookSecretRef={"name": HOOK_SECRET, "key": "url"}),
    ]
    r.create_policy(control_plane, r.policy("contain", namespace, actions))
    r.create(control_plane, r.alert("shell", namespace, "web-0"))

    status = r.wait_for_phase(control_plane, namespace, "shell", ["Remediated", "Failed"])
    results = {name: rec["result"] for name, rec in r.records(status).items()}
    assert results == dict.fromkeys(("label", "annotate", "isolate", "notify"), "Applied"), status
    assert len(r.network_policies(control_plane, namespace)) == 1
    assert len(r.events_for(control_plane, namespace, "shell", "PolicyNotify")) == 1
    wait_for(lambda: chart_operator.hook.received, timeout=10, what="the webhook call")
    counters = wait_for(
        lambda: r.policy_status(control_plane, "contain", namespace).get("actionsTaken"),
        timeout=r.RESPONSE_TIMEOUT,
        what="the policy's counters",
    )
    assert counters == 4
    assert _rbac_denials(chart_operator.service) == []


def test_scale_workload_succeeds_with_the_charts_rbac(
    control_plane: Cluster, chart_operator: ChartOperator, namespace: str
) -> None:
    _, owned = r.create_deployment(control_plane, namespace, "web", replicas=2)
    r.create_policy(control_plane, r.policy("scale", namespace, [r.scale_action()]))
    r.create(control_plane, r.alert("shell", namespace, owned["metadata"]["name"]))
    status = r.wait_for_phase(control_plane, namespace, "shell", ["Remediated", "Failed"])
    assert r.records(status)["scale"]["result"] == "Applied", r.records(status)["scale"]
    assert r.replicas(control_plane, namespace, "web") == 0
    assert _rbac_denials(chart_operator.service) == []


def test_a_disabled_action_is_reported_forbidden(
    control_plane: Cluster, chart_operator: ChartOperator, namespace: str
) -> None:
    r.create_pod(control_plane, namespace, "bare")
    action = r.delete_action(allowBarePods=True)
    r.create_policy(control_plane, r.policy("delete", namespace, [action]))
    r.create(control_plane, r.alert("shell", namespace, "bare"))

    status = r.wait_for_phase(control_plane, namespace, "shell", "Failed")
    record = r.records(status)["delete"]
    assert record["result"] == "Forbidden"
    assert "the operator may not delete pods" in record["message"]
    assert f"in namespace '{namespace}'" in record["message"]
    assert "actions.deletePod.enabled=true" in record["message"]
    assert "system:serviceaccount:" in record["message"]  # the API server's own words
    assert r.get(control_plane, "pod", "bare", namespace) is not None
    (failed,) = r.wait_for_events(control_plane, namespace, "shell", "ActionFailed")
    assert failed["type"] == "Warning"

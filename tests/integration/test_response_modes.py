"""The three policy modes on the real API server, with the operator as a real process.

DryRun records every action with the exact objects as YAML and creates or changes nothing.
RequireApproval records the plan, waits in PendingApproval, refuses an approval written by the
operator's own field manager, and acts once a person approves, recording who (from
managedFields). Enforce acts at once: labels and annotations on the pod, an isolating
NetworkPolicy owned by the alert, a notification Event, one Event per action, the decision in
the printer column, and the policy's counters.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml

from tests.support import response as r
from tests.support.controlplane import Cluster
from tests.support.processes import Service, wait_for


@pytest.fixture(scope="module")
def operator(control_plane: Cluster) -> Iterator[Service]:
    own = r.new_namespace(control_plane, "ft-op")
    with r.response_operator(control_plane, own) as service:
        yield service
    r.delete(control_plane, "namespace", own)


def test_dry_run_records_objects_as_yaml_and_changes_nothing(
    control_plane: Cluster, operator: Service, namespace: str
) -> None:
    r.create_pod(control_plane, namespace, "web-0", labels={"app": "web"})
    r.create_policy(
        control_plane,
        r.policy("dry", namespace, [r.label_action(), r.isolate_action()], mode="DryRun"),
    )
    r.create(control_plane, r.alert("shell", namespace, "web-0"))

    status = r.wait_for_phase(control_plane, namespace, "shell", "DryRun")
    decision = status["decision"]
    assert decision["outcome"] == "Matched"
    assert decision["policy"] == f"ResponsePolicy/{namespace}/dry"
    assert decision["mode"] == "DryRun"
    records = r.records(status)
    assert list(records) == ["label", "isolate"]
    assert {rec["result"] for rec in records.values()} == {"Planned"}
    assert all("startedAt" not in rec for rec in records.values())
    documents = [d for d in yaml.safe_load_all(records["isolate"]["planned"]) if d]
    (netpol,) = [d for d in documents if d.get("kind") == "NetworkPolicy"]
    assert netpol["metadata"]["namespace"] == namespace
    assert netpol["metadata"]["ownerReferences"][0]["kind"] == "FalcoAlert"
    assert "falcotriage.io/quarantine" in records["label"]["planned"]

    assert r.network_policies(control_plane, namespace) == []
    assert r.pod_labels(control_plane, namespace, "web-0") == {"app": "web"}
    r.wait_for_events(control_plane, namespace, "shell", "ActionPlanned", count=2)
    table = control_plane.kubectl("get", "falcoalert", "shell", "-n", namespace).stdout
    assert decision["summary"] in table
    assert "DryRun" in table


def test_require_approval_waits_then_acts_and_records_the_approver(
    control_plane: Cluster, operator: Service, namespace: str
) -> None:
    r.create_pod(control_plane, namespace, "web-0")
    r.create_policy(
        control_plane,
        r.policy(
            "approve",
            namespace,
            [r.isolate_action(), r.annotate_action()],
            mode="RequireApproval",
        ),
    )
    r.create(control_plane, r.alert("shell", namespace, "web-0"))
    status = r.wait_for_phase(control_plane, namespace, "shell", "PendingApproval")
    assert {rec["result"] for rec in r.records(status).values()} == {"Planned"}
    assert r.network_policies(control_plane, namespace) == []
    r.wait_for_events(control_plane, namespace, "shell", "ApprovalRequired")

    # An approval the operator's own field manager wrote does not count.
    control_plane.kubectl(
        "annotate",
        "falcoalert",
        "shell",
        "-n",
        namespace,
        "--field-manager=falco-triage-operator",
        "falcotriage.io/approve=true",
    )
    r.wait_for_events(control_plane, namespace, "shell", "ApprovalRejected")
    assert r.status_of(control_plane, namespace, "shell")["phase"] == "PendingApproval"
    assert r.network_policies(control_plane, namespace) == []

    r.annotate(control_plane, namespace, "shell", "falcotriage.io/approve-")
    r.annotate(control_plane, namespace, "shell", "falcotriage.io/approve=true")
    status = r.wait_for_phase(control_plane, namespace, "shell", "Remediated")
    assert status["decision"]["approvedBy"].startswith("kubectl-annotate (Update, ")
    assert {rec["result"] for rec in r.records(status).values()} == {"Applied"}
    (netpol,) = r.network_policies(control_plane, namespace)
    uid = r.get(control_plane, "falcoalert", "shell", namespace)["metadata"]["uid"]
    assert netpol["metadata"]["ownerReferences"][0]["uid"] == uid
    pod = r.get(control_plane, "pod", "web-0", namespace)
    assert pod["metadata"]["annotations"]["falcotriage.io/reason"] == "falco alert"
    r.wait_for_events(control_plane, namespace, "shell", "Approved")


def test_enforce_acts_at_once_with_one_event_per_action(
    control_plane: Cluster, operator: Service, namespace: str
) -> None:
    r.create_pod(control_plane, namespace, "web-0", labels={"app": "web"})
    actions = [r.label_action(), r.annotate_action(), r.isolate_action(), r.notify_action()]
    r.create_policy(control_plane, r.policy("enforce", namespace, actions))
    r.create(control_plane, r.alert("shell", namespace, "web-0"))

    status = r.wait_for_phase(control_plane, namespace, "shell", "Remediated")
    records = r.records(status)
    assert [rec["result"] for rec in records.values()] == ["Applied"] * 4
    assert all(rec.get("appliedAt") for rec in records.values())
    alert = r.get(control_plane, "falcoalert", "shell", namespace)
    assert "falcotriage.io/finalizer" in alert["metadata"]["finalizers"]

    labels = r.pod_labels(control_plane, namespace, "web-0")
    assert labels["falcotriage.io/quarantine"] == "true"
    isolation = [key for key in labels if key.startswith("falcotriage.io/isolated-")]
    assert len(isolation) == 1
    (netpol,) = r.network_policies(control_plane, namespace)
    assert netpol["spec"]["podSelector"] == {"matchLabels": {isolation[0]: "true"}}
    (owner,) = netpol["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == (
        "FalcoAlert",
        alert["metadata"]["uid"],
        False,
    )
    assert records["isolate"]["objects"][0]["kind"] == "NetworkPolicy"

    notify = r.events_for(control_plane, namespace, "shell", "PolicyNotify")
    assert len(notify) == 1
    assert notify[0]["type"] == "Warning"
    assert "Terminal shell in container" in notify[0]["message"]
    applied = r.wait_for_events(control_plane, namespace, "shell", "ActionApplied", count=4)
    assert sorted(e["message"].split(":")[0] for e in applied) == [
        "annotate",
        "isolate",
        "label",
        "notify",
    ]
    counters = wait_for(
        lambda: (
            (s := r.policy_status(control_plane, "enforce", namespace)).get("actionsTaken") and s
        ),
        timeout=r.RESPONSE_TIMEOUT,
        what="the policy's counters",
    )
    assert (counters["matchedAlerts"], counters["actionsTaken"]) == (1, 4)

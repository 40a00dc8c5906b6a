"""Factories for policies, alerts, pods and decision contexts (policy and remediation tests).

Alerts are built the way the receiver builds them: a Falco event from :mod:`factories`
(public-rule facts), normalized, then :func:`falco_triage.events.alert_spec`::

    spec = make_spec("Known Cryptominer Process Executed", namespace="payments")
    policy = make_policy("isolate", match={"rules": ["Known *"]}, actions=[isolate_action()])
    cluster = make_cluster_policy("default", match={"namespaces": ["*"]}, precedence=5)
    pod = make_pod(labels={"app": "web"}, controller=None)        # a bare pod
    decision = decide(spec, [policy, cluster], make_context(pod_labels={"app": "web"}))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from falco_triage.events import alert_name, alert_spec
from falco_triage.models.alert import (
    ActionRecord,
    FalcoAlert,
    FalcoAlertSpec,
    FalcoAlertStatus,
    Remediation,
)
from falco_triage.models.policy import ClusterResponsePolicy, ResponsePolicy
from falco_triage.policy.decide import DecisionContext
from tests.unit.factories import DEFAULT_RULE, make_event

API_VERSION = "falcotriage.io/v1alpha1"
OPERATOR_NAMESPACE = "falco-triage"
NAMESPACE = "shop"
POD = "web-7d9f8c6b5-x2kqp"
POD_UID = "6c1e0c53-93a5-4a53-9d1e-0f3c6b0f2a11"
ALERT_UID = "0d5b2f0e-7b5e-4c3a-9a53-1f6a8e2b9c44"
CONTAINER_ID = "3f1c9a2b7d4e"  # what the event factories send as container.id
FULL_CONTAINER_ID = CONTAINER_ID + "5a6b" * 13  # 64 hex, as the kubelet reports it
NOW = datetime(2024, 5, 14, 9, 30, tzinfo=UTC)


def make_spec(
    rule: str = DEFAULT_RULE, *, namespace: str | None = NAMESPACE, **kwargs: Any
) -> FalcoAlertSpec:
    """The FalcoAlert spec the receiver would write for this event."""
    if namespace is None:
        kwargs.setdefault("host", True)
    else:
        kwargs["namespace"] = namespace
    return alert_spec(make_event(rule, **kwargs), OPERATOR_NAMESPACE)


def label_action(name: str = "label", **labels: str) -> dict[str, Any]:
    return {"name": name, "labelPod": {"labels": labels or {"falcotriage.io/quarantine": "true"}}}


def annotate_action(name: str = "annotate", **annotations: str) -> dict[str, Any]:
    values = annotations or {"falcotriage.io/reason": "falco alert"}
    return {"name": name, "annotatePod": {"annotations": values}}


def isolate_action(name: str = "isolate", **options: Any) -> dict[str, Any]:
    return {"name": name, "isolatePod": options}


def delete_action(name: str = "delete", **options: Any) -> dict[str, Any]:
    return {"name": name, "deletePod": options}


def scale_action(name: str = "scale", **options: Any) -> dict[str, Any]:
    return {"name": name, "scaleWorkload": options}


def notify_action(name: str = "notify", **options: Any) -> dict[str, Any]:
    return {"name": name, "notify": options or {"event": True}}


def policy_body(
    name: str = "policy",
    namespace: str | None = NAMESPACE,
    *,
    kind: str = "ResponsePolicy",
    match: Mapping[str, Any] | None = None,
    actions: Iterable[Mapping[str, Any]] | None = None,
    mode: str = "DryRun",
    generation: int = 1,
    **spec: Any,
) -> dict[str, Any]:
    """A policy as YAML/JSON (what the cluster or a file holds)."""
    metadata: dict[str, Any] = {"name": name, "generation": generation}
    if namespace is not None and kind == "ResponsePolicy":
        metadata["namespace"] = namespace
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": metadata,
        "spec": {
            "mode": mode,
            "match": dict(match) if match is not None else {"rules": [DEFAULT_RULE]},
            "actions": [dict(a) for a in actions] if actions is not None else [label_action()],
            **spec,
        },
    }


def make_policy(
    name: str = "policy", namespace: str | None = NAMESPACE, **kwargs: Any
) -> ResponsePolicy:
    return ResponsePolicy.model_validate(policy_body(name, namespace, **kwargs))


def make_cluster_policy(name: str = "cluster-policy", **kwargs: Any) -> ClusterResponsePolicy:
    return ClusterResponsePolicy.model_validate(
        policy_body(name, None, kind="ClusterResponsePolicy", **kwargs)
    )


def make_context(**overrides: Any) -> DecisionContext:
    """A context with known, empty labels (so selectors can be evaluated) at :data:`NOW`."""
    values: dict[str, Any] = {
        "now": NOW,
        "operator_namespace": OPERATOR_NAMESPACE,
        "namespace_labels": {},
        "pod_labels": {},
    }
    values.update(overrides)
    return DecisionContext(**values)


def make_pod(
    name: str = POD,
    namespace: str = NAMESPACE,
    *,
    uid: str = POD_UID,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    container_id: str | None = FULL_CONTAINER_ID,
    controller: tuple[str, str, str] | None = ("ReplicaSet", "web-7d9f8c6b5", "rs-uid"),
    deleting: bool = False,
) -> dict[str, Any]:
    """A pod as the API server returns it (JSON, camelCase)."""
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid,
        "labels": dict(labels or {"app": "web", "pod-template-hash": "7d9f8c6b5"}),
    }
    if annotations is not None:
        metadata["annotations"] = dict(annotations)
    if controller is not None:
        kind, owner, owner_uid = controller
        metadata["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": kind,
                "name": owner,
                "uid": owner_uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    if deleting:
        metadata["deletionTimestamp"] = "2024-05-14T09:31:00Z"
    statuses = []
    if container_id is not None:
        statuses.append({"name": "nginx", "containerID": f"containerd://{container_id}"})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "status": {"containerStatuses": statuses},
    }


def make_alert(
    spec: FalcoAlertSpec | None = None,
    *,
    uid: str | None = ALERT_UID,
    records: Iterable[ActionRecord] = (),
) -> FalcoAlert:
    """The FalcoAlert object for ``spec``, in the namespace the receiver would choose."""
    spec = spec or make_spec()
    metadata: dict[str, Any] = {
        "name": alert_name(spec),
        "namespace": spec.target.namespace or OPERATOR_NAMESPACE,
    }
    if uid is not None:
        metadata["uid"] = uid
    recorded = list(records)
    status = FalcoAlertStatus(remediation=Remediation(actions=recorded)) if recorded else None
    return FalcoAlert(metadata=metadata, spec=spec, status=status)

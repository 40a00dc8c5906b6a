"""The RBAC each action needs, so the Helm chart grants only what enabled actions use.

Rules are ClusterRole rules (the operator acts in any namespace it watches) except
:data:`OPERATOR_NAMESPACE_PERMISSIONS`, which belong in a Role in the operator's own
namespace: notification webhooks are read from Secrets there and nowhere else, so the
operator never needs to read Secrets cluster-wide.

Every pod action reads the pod first (``get``) to check it is still the alert's target.
"""

from __future__ import annotations

from collections.abc import Iterable

Rule = dict[str, list[str]]


def _rule(group: str, resources: list[str], verbs: list[str]) -> Rule:
    return {"apiGroups": [group], "resources": resources, "verbs": verbs}


ACTION_PERMISSIONS: dict[str, list[Rule]] = {
    # Merge-patch the pod's labels.
    "labelPod": [_rule("", ["pods"], ["get", "patch"])],
    # Merge-patch the pod's annotations.
    "annotatePod": [_rule("", ["pods"], ["get", "patch"])],
    # Label the pod, create its NetworkPolicy (get: create-or-get), delete it on rollback.
    "isolatePod": [
        _rule("", ["pods"], ["get", "patch"]),
        _rule("networking.k8s.io", ["networkpolicies"], ["get", "create", "delete"]),
    ],
    # Delete the pod (its controller recreates it).
    "deletePod": [_rule("", ["pods"], ["get", "delete"])],
    # Find the owner (pod → ReplicaSet → Deployment, or StatefulSet) and scale it through the
    # scale subresource only: patching the Deployment itself would allow changing its image.
    "scaleWorkload": [
        _rule("", ["pods"], ["get"]),
        _rule("apps", ["replicasets"], ["get"]),
        _rule("apps", ["deployments/scale", "statefulsets/scale"], ["get", "patch"]),
    ],
    # An Event on the FalcoAlert (core/v1 Events, as kopf posts them).
    "notify": [_rule("", ["events"], ["create"])],
}

OPERATOR_NAMESPACE_PERMISSIONS: dict[str, list[Rule]] = {
    # The Secret holding the webhook URL.
    "notify": [_rule("", ["secrets"], ["get"])],
}


def permissions_for(action_types: Iterable[str]) -> list[Rule]:
    """The merged, de-duplicated cluster-wide rules for these action types."""
    return _merge(ACTION_PERMISSIONS, action_types)


def namespace_permissions_for(action_types: Iterable[str]) -> list[Rule]:
    """The merged rules for the Role in the operator's own namespace."""
    return _merge(OPERATOR_NAMESPACE_PERMISSIONS, action_types)


def _merge(table: dict[str, list[Rule]], action_types: Iterable[str]) -> list[Rule]:
    verbs: dict[tuple[str, str], set[str]] = {}
    for action_type in action_types:
        if action_type not in ACTION_PERMISSIONS:
            raise ValueError(f"unknown action type {action_type!r}")
        for rule in table.get(action_type, []):
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    verbs.setdefault((group, resource), set()).update(rule["verbs"])
    return [_rule(group, [resource], sorted(v)) for (group, resource), v in sorted(verbs.items())]

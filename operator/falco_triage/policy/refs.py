"""How a policy is named in decisions, conditions and logs, and the precedence order."""

from __future__ import annotations

from falco_triage.models.policy import ClusterResponsePolicy, ResponsePolicy

AnyPolicy = ResponsePolicy | ClusterResponsePolicy


def policy_name(policy: AnyPolicy) -> str:
    name = policy.metadata.get("name")
    return name if isinstance(name, str) else ""


def policy_namespace(policy: AnyPolicy) -> str | None:
    """The namespace of a ResponsePolicy; None for cluster policies (and unset namespaces)."""
    if isinstance(policy, ClusterResponsePolicy):
        return None
    namespace = policy.metadata.get("namespace")
    return namespace if isinstance(namespace, str) and namespace else None


def policy_ref(policy: AnyPolicy) -> str:
    """``ResponsePolicy/<namespace>/<name>`` or ``ClusterResponsePolicy/<name>``."""
    if isinstance(policy, ClusterResponsePolicy):
        return f"ClusterResponsePolicy/{policy_name(policy)}"
    return f"ResponsePolicy/{policy_namespace(policy) or '?'}/{policy_name(policy)}"


def precedence_key(policy: AnyPolicy) -> tuple[int, int, str]:
    """Sort key: the first policy in this order wins.

    1. A namespaced ResponsePolicy before any ClusterResponsePolicy: the people who own a
       namespace know its workloads better than a cluster-wide default does.
    2. Higher ``spec.precedence`` first.
    3. Name, alphabetically, so that the order never depends on list or watch order.
       (Only ResponsePolicies of the alert's own namespace can match, so names are unique.)
    """
    scope = 1 if isinstance(policy, ClusterResponsePolicy) else 0
    return (scope, -policy.spec.precedence, policy_name(policy))

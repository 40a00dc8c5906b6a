"""The NetworkPolicy that isolates exactly one pod.

NB: NetworkPolicies only ever *add* allowed traffic. Once any policy selects a pod for a
direction, that direction is denied except what some selecting policy allows, so this policy
cuts off everything *unless another NetworkPolicy in the namespace also selects the pod and
allows traffic*: that traffic keeps flowing. Complete isolation in namespaces that already
use NetworkPolicies needs a CNI with deny rules, or scaleWorkload/deletePod.
"""

from __future__ import annotations

from typing import Any

from falco_triage.models.policy import IsolatePod
from falco_triage.remediation.names import (
    POD_ANNOTATION,
    POLICY_ANNOTATION,
    isolation_label,
    managed_labels,
    network_policy_name,
    owner_reference,
)

API_VERSION = "networking.k8s.io/v1"
KIND = "NetworkPolicy"
# kube-dns / CoreDNS as installed by kubeadm, kind, k3s and the managed offerings;
# ``kubernetes.io/metadata.name`` is set on every namespace by the API server (1.21+).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
DNS_NAMESPACE = "kube-system"
DNS_POD_LABELS = {"k8s-app": "kube-dns"}
DNS_PORTS = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]


def build_network_policy(
    alert_name: str,
    alert_uid: str | None,
    namespace: str,
    pod_name: str,
    action: IsolatePod,
    *,
    policy: str | None = None,
) -> dict[str, Any]:
    """The isolating NetworkPolicy for one alert's pod (pure, deterministic).

    It selects the pod through the alert's isolation label (see
    :func:`~falco_triage.remediation.names.isolation_label`), which the same action sets on
    the pod. Allow-lists (CIDRs, namespaces) apply to every denied direction; DNS only to
    egress. It is owned by the FalcoAlert: deleting the alert deletes the isolation.
    """
    key, value = isolation_label(namespace, alert_name)
    annotations = {POD_ANNOTATION: pod_name}
    if policy:
        annotations[POLICY_ANNOTATION] = policy
    spec: dict[str, Any] = {"podSelector": {"matchLabels": {key: value}}, "policyTypes": []}
    has_peers = bool(action.allow_cidrs or action.allow_namespaces)
    if action.deny_ingress:
        spec["policyTypes"].append("Ingress")
        # An empty list under a listed policy type denies every connection in that direction.
        spec["ingress"] = [{"from": _peers(action)}] if has_peers else []
    if action.deny_egress:
        spec["policyTypes"].append("Egress")
        egress: list[dict[str, Any]] = []
        if action.allow_dns:
            egress.append({"to": [_dns_peer()], "ports": [dict(p) for p in DNS_PORTS]})
        if has_peers:
            egress.append({"to": _peers(action)})
        spec["egress"] = egress
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": network_policy_name(namespace, alert_name),
            "namespace": namespace,
            "labels": managed_labels(alert_name),
            "annotations": annotations,
            "ownerReferences": [owner_reference(alert_name, alert_uid)],
        },
        "spec": spec,
    }


def _peers(action: IsolatePod) -> list[dict[str, Any]]:
    """The allow-list as NetworkPolicy peers (a fresh list each call: no shared objects)."""
    return [{"ipBlock": {"cidr": cidr}} for cidr in action.allow_cidrs] + [
        {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: ns}}}
        for ns in action.allow_namespaces
    ]


def _dns_peer() -> dict[str, Any]:
    return {
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: DNS_NAMESPACE}},
        "podSelector": {"matchLabels": dict(DNS_POD_LABELS)},
    }

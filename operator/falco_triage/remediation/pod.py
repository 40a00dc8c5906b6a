"""Checks on the live pod before anything is done to it, and its owning workload.

Alerts arrive seconds to minutes after the event, and approval can take hours: by then the
pod may be gone, or a new pod may carry the same name (StatefulSets reuse names), or the
container may have restarted. Acting on the wrong pod is worse than not acting, so every
pod action first checks that the pod still *is* the alert's target.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from falco_triage.models.alert import Target

_MIN_ID_CHARS = 12  # Falco's short container id
_STATUS_LISTS = ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses")


@dataclass(frozen=True)
class OwnerRef:
    kind: str
    name: str
    uid: str


def target_mismatch(target: Target, pod: Mapping[str, Any] | None) -> str | None:
    """Why ``pod`` may not be acted on for this alert, or None when it is the target.

    The pod must be in the target's namespace, have the target's name, not be terminating,
    and, when the alert names a container id, still run that container (a restarted
    container or a recreated pod has a new id).
    """
    if target.pod is None or target.namespace is None:
        return "the alert concerns no pod (host or cluster-level event)"
    if pod is None:
        return f"pod {target.namespace}/{target.pod} no longer exists"
    metadata = pod.get("metadata") or {}
    name, namespace = metadata.get("name"), metadata.get("namespace")
    if (namespace, name) != (target.namespace, target.pod):
        return f"pod {namespace}/{name} is not the alert's target {target.namespace}/{target.pod}"
    if metadata.get("deletionTimestamp"):
        return f"pod {namespace}/{name} is already being deleted"
    if not metadata.get("uid"):
        return f"pod {namespace}/{name} has no uid (not read from the API server)"
    if target.container_id and not _runs_container(pod, target.container_id):
        return (
            f"pod {namespace}/{name} no longer runs container {target.container_id} "
            "(restarted or recreated since the alert)"
        )
    return None


def pod_labels(pod: Mapping[str, Any]) -> dict[str, str]:
    return dict((pod.get("metadata") or {}).get("labels") or {})


def pod_annotations(pod: Mapping[str, Any]) -> dict[str, str]:
    return dict((pod.get("metadata") or {}).get("annotations") or {})


def pod_uid(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("uid") or "")


def controller_of(obj: Mapping[str, Any]) -> OwnerRef | None:
    """The ownerReference with ``controller: true`` (the object that recreates this one)."""
    for owner in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("controller") is True:
            return OwnerRef(str(owner.get("kind")), str(owner.get("name")), str(owner.get("uid")))
    return None


def workload_of(
    pod: Mapping[str, Any], replica_set: Mapping[str, Any] | None = None
) -> OwnerRef | None:
    """The Deployment or StatefulSet behind a pod, or None (bare pod, Job, DaemonSet, …).

    A Deployment owns its pods through a ReplicaSet: when the pod's controller is a
    ReplicaSet, the adapter reads it (``apps/v1 replicasets get``) and passes it here.
    """
    controller = controller_of(pod)
    if controller is None:
        return None
    if controller.kind == "StatefulSet":
        return controller
    if controller.kind != "ReplicaSet" or replica_set is None:
        return None
    rs_meta = replica_set.get("metadata") or {}
    if rs_meta.get("uid") != controller.uid:
        return None  # not the ReplicaSet the pod names; never guess
    owner = controller_of(replica_set)
    return owner if owner is not None and owner.kind == "Deployment" else None


def _runs_container(pod: Mapping[str, Any], container_id: str) -> bool:
    """Falco reports a 12-hex short id; Kubernetes ``<runtime>://<64 hex>``."""
    status = pod.get("status") or {}
    wanted = container_id.lower()
    if len(wanted) < _MIN_ID_CHARS:
        return False  # too short to identify one container; never guess
    for key in _STATUS_LISTS:
        for container in status.get(key) or []:
            full = str(container.get("containerID") or "").rpartition("://")[2].lower()
            if full.startswith(wanted):
                return True
    return False

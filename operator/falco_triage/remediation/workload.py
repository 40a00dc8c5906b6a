"""Deleting the pod, and scaling its Deployment or StatefulSet to zero (and back)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from falco_triage.models.alert import ObjectRef
from falco_triage.models.policy import DeletePod, ScaleWorkload
from falco_triage.remediation.pod import controller_of, pod_uid
from falco_triage.remediation.steps import Operation, Verb, WorkloadState

SCALE_SUBRESOURCE = "scale"
KIND_KEY, NAME_KEY, REPLICAS_KEY = "kind", "name", "replicas"


@dataclass(frozen=True)
class Planned:
    """Operations to run, or why not; ``rollback`` holds the facts to undo them."""

    operations: tuple[Operation, ...] = ()
    skip_reason: str | None = None
    rollback: Mapping[str, str] | None = None


def plan_delete_pod(pod: Mapping[str, Any], action: DeletePod) -> Planned:
    """Delete with the policy's grace period; refused for bare pods unless allowed.

    A pod without a controller is not recreated: deleting it ends the workload for good
    (and its evidence), which a policy must ask for explicitly with ``allowBarePods``.
    """
    metadata = pod.get("metadata") or {}
    if controller_of(pod) is None and not action.allow_bare_pods:
        return Planned(
            skip_reason=(
                "pod has no controller, so nothing would recreate it; set "
                "deletePod.allowBarePods: true to delete such pods"
            )
        )
    target = ObjectRef(
        api_version="v1", kind="Pod", namespace=metadata.get("namespace"), name=metadata["name"]
    )
    options = {
        "gracePeriodSeconds": action.grace_period_seconds,
        "preconditions": {"uid": pod_uid(pod)},
    }
    return Planned(operations=(Operation(Verb.DELETE, target, options),))


def plan_scale(
    workload: WorkloadState | None,
    action: ScaleWorkload,
    *,
    recorded: Mapping[str, str] | None = None,
) -> Planned:
    """Scale to zero through the ``scale`` subresource; rollback restores the replicas.

    ``recorded`` is the rollback of an earlier, interrupted run: its replica count is the
    one from before *that* run (the live count may already be our zero).
    """
    if workload is None:
        return Planned(skip_reason="pod is not owned by a Deployment or StatefulSet")
    if workload.kind not in action.kinds:
        return Planned(
            skip_reason=f"pod's owner is a {workload.kind}; this action scales only "
            + " or ".join(action.kinds)
        )
    if recorded and recorded.get(NAME_KEY) == workload.name:
        rollback = dict(recorded)
    else:
        rollback = {
            KIND_KEY: workload.kind,
            NAME_KEY: workload.name,
            REPLICAS_KEY: str(workload.replicas),
        }
    op = Operation(
        Verb.PATCH,
        _ref(workload.kind, workload.namespace, workload.name),
        {"spec": {"replicas": 0}},
        subresource=SCALE_SUBRESOURCE,
    )
    return Planned(operations=(op,), rollback=rollback)


def plan_scale_rollback(facts: Mapping[str, str], current: WorkloadState | None) -> Planned:
    """Restore the recorded replicas, only if the workload is still at our zero."""
    if current is None:
        return Planned(skip_reason="the workload no longer exists")
    if current.kind != facts.get(KIND_KEY) or current.name != facts.get(NAME_KEY):
        return Planned(skip_reason="the workload is not the one that was scaled")
    if current.replicas != 0:
        return Planned(skip_reason=f"replicas were changed to {current.replicas} since; left alone")
    replicas = int(facts.get(REPLICAS_KEY, "0"))
    op = Operation(
        Verb.PATCH,
        _ref(current.kind, current.namespace, current.name),
        {"spec": {"replicas": replicas}},
        subresource=SCALE_SUBRESOURCE,
    )
    return Planned(operations=(op,))


def _ref(kind: str, namespace: str, name: str) -> ObjectRef:
    return ObjectRef(api_version="apps/v1", kind=kind, namespace=namespace, name=name)

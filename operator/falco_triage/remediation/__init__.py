"""Remediation planning: pure builders for every object and patch a policy action needs.

Nothing here talks to the cluster. :func:`plan` turns a Decision and the live pod into
:class:`PlannedStep` objects whose operations the k8s adapter sends one by one; every
operation is idempotent (deterministic names, create-or-get, merge patches), every step
records what rollback needs, and :func:`plan_rollback` builds the undo.
"""

from falco_triage.remediation.metadata_patch import (
    build_annotation_patch,
    build_annotation_rollback_patch,
    build_label_patch,
    build_label_rollback_patch,
)
from falco_triage.remediation.names import is_ours, isolation_label, network_policy_name
from falco_triage.remediation.network_policy import build_network_policy
from falco_triage.remediation.notify import build_event, build_notification
from falco_triage.remediation.permissions import ACTION_PERMISSIONS, permissions_for
from falco_triage.remediation.plan import plan, plan_rollback, preview_yaml
from falco_triage.remediation.pod import target_mismatch, workload_of
from falco_triage.remediation.steps import Operation, PlannedStep, Verb, WorkloadState
from falco_triage.remediation.workload import plan_delete_pod, plan_scale, plan_scale_rollback

__all__ = [
    "ACTION_PERMISSIONS",
    "Operation",
    "PlannedStep",
    "Verb",
    "WorkloadState",
    "build_annotation_patch",
    "build_annotation_rollback_patch",
    "build_event",
    "build_label_patch",
    "build_label_rollback_patch",
    "build_network_policy",
    "build_notification",
    "is_ours",
    "isolation_label",
    "network_policy_name",
    "permissions_for",
    "plan",
    "plan_delete_pod",
    "plan_rollback",
    "plan_scale",
    "plan_scale_rollback",
    "preview_yaml",
    "target_mismatch",
    "workload_of",
]

"""``plan()``: a Decision and the live pod → the steps the adapter executes, one per action.

Pure and deterministic: the same decision, alert and pod always give the same steps, so a
DryRun record shows exactly what Enforce would send. Nothing here reads the cluster; the
adapter passes what it read (the pod, the owning workload) and executes the operations.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from falco_triage.models.alert import (
    ActionRecord,
    ActionResult,
    Decision,
    DecisionOutcome,
    FalcoAlert,
    ObjectRef,
)
from falco_triage.models.common import API_VERSION
from falco_triage.models.policy import Action
from falco_triage.remediation import metadata_patch, network_policy
from falco_triage.remediation.names import isolation_label
from falco_triage.remediation.notify import build_event, build_notification
from falco_triage.remediation.pod import (
    pod_annotations,
    pod_labels,
    pod_uid,
    target_mismatch,
)
from falco_triage.remediation.steps import (
    TERMINAL_RESULTS,
    Operation,
    PlannedStep,
    Verb,
    WorkloadState,
)
from falco_triage.remediation.workload import (
    Planned,
    plan_delete_pod,
    plan_scale,
    plan_scale_rollback,
)
from falco_triage.settings import PROTECTED_NAMESPACES

DEFAULT_OPERATOR_NAMESPACE = "falco-triage"
UNKNOWN_POD_UID = "<uid of the pod>"  # offline preview only; never sent
NETWORK_POLICY_KEY, LABEL_KEY = "networkPolicy", "label"
_POD_ACTIONS = ("labelPod", "annotatePod", "isolatePod", "deletePod", "scaleWorkload")


class _Context:
    """Everything one ``plan()`` call shares between its steps."""

    def __init__(
        self,
        decision: Decision,
        alert: FalcoAlert,
        pod: Mapping[str, Any] | None,
        workload: WorkloadState | None,
        operator_namespace: str,
        preview: bool,
    ) -> None:
        self.decision = decision
        self.alert = alert
        self.pod = pod
        self.workload = workload
        self.operator_namespace = operator_namespace
        self.preview = preview
        self.name = str(alert.metadata.get("name") or "")
        self.namespace = str(alert.metadata.get("namespace") or alert.spec.target.namespace or "")
        uid = alert.metadata.get("uid")
        self.uid = uid if isinstance(uid, str) and uid else None
        status = alert.status
        remediation = status.remediation if status else None
        self.records = {r.name: r for r in remediation.actions} if remediation else {}

    @property
    def pod_ref(self) -> ObjectRef:
        target = self.alert.spec.target
        return ObjectRef(api_version="v1", kind="Pod", namespace=target.namespace, name=target.pod)

    @property
    def pod_uid(self) -> str:
        return UNKNOWN_POD_UID if self.pod is None else pod_uid(self.pod)

    def alert_ref(self) -> ObjectRef:
        return ObjectRef(
            api_version=API_VERSION, kind="FalcoAlert", namespace=self.namespace, name=self.name
        )

    def recorded_rollback(self, action: Action) -> Mapping[str, str] | None:
        """The rollback facts of an interrupted earlier run of this action, if any.

        Only a record with ``startedAt`` counts: its facts were read before *it* patched.
        Re-reading now would see our own change and record it as the previous state.
        """
        record = self.records.get(action.name)
        if record is not None and record.started_at is not None and record.rollback:
            return record.rollback
        return None


def plan(
    decision: Decision,
    alert: FalcoAlert,
    pod: Mapping[str, Any] | None,
    *,
    workload: WorkloadState | None = None,
    operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE,
    protected_namespaces: Collection[str] = PROTECTED_NAMESPACES,
    preview: bool = False,
) -> list[PlannedStep]:
    """The steps for a ``Matched`` decision (none for any other outcome).

    ``pod`` is the live pod named by the alert's target, as a JSON dict (None: not found).
    ``workload`` is its Deployment/StatefulSet with current replicas (see
    :func:`~falco_triage.remediation.pod.workload_of`); needed only for scaleWorkload.
    ``preview`` plans without a cluster (``policy check``): the pod is taken on the alert's
    word and values only the cluster knows are shown as placeholders.
    """
    if decision.outcome != DecisionOutcome.MATCHED:
        return []
    ctx = _Context(decision, alert, pod, workload, operator_namespace, preview)
    target = alert.spec.target
    protected = set(protected_namespaces) | {operator_namespace}
    refusal: str | None = None
    if target.namespace is not None and target.namespace in protected:
        refusal = f"namespace {target.namespace!r} is protected"  # decide() refuses this first
    if preview and target.pod is not None:
        pod_problem = refusal  # offline: the pod is taken on the alert's word
    else:
        pod_problem = refusal or target_mismatch(target, pod)
    steps = []
    for action in decision.action_specs:
        if refusal:
            step = PlannedStep(action.name, action.type, skip_reason=refusal)
        elif action.type in _POD_ACTIONS and pod_problem:
            step = PlannedStep(action.name, action.type, skip_reason=pod_problem)
        else:
            step = _BUILDERS[action.type](action, ctx)
        record = ctx.records.get(action.name)
        done = record.result if record and record.result in TERMINAL_RESULTS else None
        steps.append(
            PlannedStep(
                action=step.action,
                type=step.type,
                continue_on_error=action.continue_on_error,
                operations=step.operations,
                skip_reason=step.skip_reason,
                rollback=step.rollback,
                notes=step.notes,
                done=done,
            )
        )
    return steps


def preview_yaml(decision: Decision, alert: FalcoAlert) -> str:
    """Every step of :func:`plan` in preview mode as one YAML stream (``policy check``)."""
    steps = plan(decision, alert, None, preview=True)
    return "---\n".join(step.render() for step in steps)


def plan_rollback(
    record: ActionRecord,
    alert: FalcoAlert,
    pod: Mapping[str, Any] | None,
    *,
    workload: WorkloadState | None = None,
) -> PlannedStep:
    """The step that undoes one applied action (TTL expiry or manual rollback).

    Applied records and interrupted ones (Planned with ``startedAt``) are rolled back;
    others have nothing to undo. The adapter then marks the record RolledBack.
    """
    interrupted = record.result == ActionResult.PLANNED and record.started_at is not None
    if record.result != ActionResult.APPLIED and not interrupted:
        return PlannedStep(record.name, record.type, skip_reason="nothing was applied")
    target = alert.spec.target
    live = pod
    if pod is not None and target_mismatch(target.model_copy(update={"container_id": None}), pod):
        live = None  # a different pod under the same name: nothing of ours is on it
    facts = record.rollback
    if record.type in ("labelPod", "annotatePod"):
        if live is None:
            return PlannedStep(record.name, record.type, skip_reason="the pod is gone")
        field: metadata_patch.Field = "labels" if record.type == "labelPod" else "annotations"
        current = pod_labels(live) if field == "labels" else pod_annotations(live)
        patch = metadata_patch.build_metadata_rollback_patch(field, facts, current, pod_uid(live))
        if patch is None:
            return PlannedStep(record.name, record.type, skip_reason="nothing of ours is left")
        return PlannedStep(record.name, record.type, operations=(_pod_patch(live, patch),))
    if record.type == "isolatePod":
        return _isolation_rollback(record, target.namespace, live)
    if record.type == "scaleWorkload":
        return _from_planned(record.name, record.type, plan_scale_rollback(facts, workload))
    reason = {
        "deletePod": "a deleted pod cannot be brought back (its controller replaced it)",
        "notify": "a notification cannot be unsent",
    }.get(record.type, f"unknown action type {record.type!r}")
    return PlannedStep(record.name, record.type, skip_reason=reason)


def _label_or_annotate(action: Action, ctx: _Context) -> PlannedStep:
    if action.label_pod is not None:
        field: metadata_patch.Field = "labels"
        values = action.label_pod.labels
        current = pod_labels(ctx.pod) if ctx.pod is not None else None
    else:
        assert action.annotate_pod is not None
        field = "annotations"
        values = action.annotate_pod.annotations
        current = pod_annotations(ctx.pod) if ctx.pod is not None else None
    patch = metadata_patch.build_metadata_patch(field, values, ctx.pod_uid)
    rollback = ctx.recorded_rollback(action)
    notes: tuple[str, ...] = ()
    if rollback is None and current is not None:
        rollback = metadata_patch.rollback_facts(values, current)
    if current is None:
        notes = (f"the pod's current {field} are read at run time to record rollback",)
    return PlannedStep(
        action.name,
        action.type,
        operations=(Operation(Verb.PATCH, ctx.pod_ref, patch),),
        rollback=rollback or {},
        notes=notes,
    )


def _isolate(action: Action, ctx: _Context) -> PlannedStep:
    assert action.isolate_pod is not None
    target = ctx.alert.spec.target
    # Both set: target_mismatch() skipped this step otherwise.
    assert target.namespace is not None
    assert target.pod is not None
    if ctx.namespace != target.namespace:
        return PlannedStep(
            action.name,
            action.type,
            skip_reason=f"the FalcoAlert is in namespace {ctx.namespace!r}, the pod in "
            f"{target.namespace!r}; an ownerReference cannot cross namespaces",
        )
    policy = network_policy.build_network_policy(
        ctx.name,
        ctx.uid,
        target.namespace,
        target.pod,
        action.isolate_pod,
        policy=ctx.decision.policy,
    )
    key, value = isolation_label(ctx.namespace, ctx.name)
    np_ref = ObjectRef(
        api_version=network_policy.API_VERSION,
        kind=network_policy.KIND,
        namespace=target.namespace,
        name=policy["metadata"]["name"],
    )
    label_patch = metadata_patch.build_label_patch({key: value}, ctx.pod_uid)
    return PlannedStep(
        action.name,
        action.type,
        # The NetworkPolicy first: it selects nothing until the label lands, so the pod is
        # isolated at one instant (the label patch), never half-way.
        operations=(
            Operation(Verb.CREATE, np_ref, policy),
            Operation(Verb.PATCH, ctx.pod_ref, label_patch),
        ),
        rollback={NETWORK_POLICY_KEY: np_ref.name, LABEL_KEY: key},
        notes=(
            "NetworkPolicies add up: traffic another NetworkPolicy allows to this pod "
            "keeps flowing",
        ),
    )


def _delete(action: Action, ctx: _Context) -> PlannedStep:
    assert action.delete_pod is not None
    if ctx.pod is None:  # preview: no pod to read the controller from
        options = {
            "gracePeriodSeconds": action.delete_pod.grace_period_seconds,
            "preconditions": {"uid": UNKNOWN_POD_UID},
        }
        note = "whether the pod has a controller is checked at run time"
        if action.delete_pod.allow_bare_pods:
            note = "pods without a controller are deleted too (allowBarePods)"
        return PlannedStep(
            action.name,
            action.type,
            operations=(Operation(Verb.DELETE, ctx.pod_ref, options),),
            notes=(note,),
        )
    return _from_planned(action.name, action.type, plan_delete_pod(ctx.pod, action.delete_pod))


def _scale(action: Action, ctx: _Context) -> PlannedStep:
    assert action.scale_workload is not None
    if ctx.preview and ctx.workload is None:
        target = ctx.alert.spec.target
        ref = ObjectRef(
            api_version="apps/v1",
            kind=" or ".join(action.scale_workload.kinds),
            namespace=target.namespace,
            name=f"<owner of pod {target.pod}>",
        )
        op = Operation(Verb.PATCH, ref, {"spec": {"replicas": 0}}, subresource="scale")
        return PlannedStep(
            action.name,
            action.type,
            operations=(op,),
            notes=("the owner and its replica count are read at run time",),
        )
    planned = plan_scale(
        ctx.workload, action.scale_workload, recorded=ctx.recorded_rollback(action)
    )
    return _from_planned(action.name, action.type, planned)


def _notify(action: Action, ctx: _Context) -> PlannedStep:
    assert action.notify is not None
    spec, decision = ctx.alert.spec, ctx.decision
    operations = []
    if action.notify.event:
        operations.append(Operation(Verb.EVENT, ctx.alert_ref(), build_event(spec, decision)))
    ref = action.notify.webhook_secret_ref
    if ref is not None:
        secret = ObjectRef(
            api_version="v1", kind="Secret", namespace=ctx.operator_namespace, name=ref.name
        )
        body = build_notification(ctx.name, ctx.namespace, spec, decision)
        operations.append(Operation(Verb.WEBHOOK, secret, body, secret_key=ref.key))
    return PlannedStep(action.name, action.type, operations=tuple(operations))


_BUILDERS: dict[str, Callable[[Action, _Context], PlannedStep]] = {
    "labelPod": _label_or_annotate,
    "annotatePod": _label_or_annotate,
    "isolatePod": _isolate,
    "deletePod": _delete,
    "scaleWorkload": _scale,
    "notify": _notify,
}


def _isolation_rollback(
    record: ActionRecord, namespace: str | None, pod: Mapping[str, Any] | None
) -> PlannedStep:
    """Delete the NetworkPolicy (404 is fine), then take our label off the pod."""
    facts = record.rollback
    name, key = facts.get(NETWORK_POLICY_KEY), facts.get(LABEL_KEY)
    operations = []
    if name:
        np_ref = ObjectRef(
            api_version=network_policy.API_VERSION,
            kind=network_policy.KIND,
            namespace=namespace,
            name=name,
        )
        operations.append(Operation(Verb.DELETE, np_ref, {}))
    if key and pod is not None and key in pod_labels(pod):
        patch = {"metadata": {"uid": pod_uid(pod), "labels": {key: None}}}
        operations.append(_pod_patch(pod, patch))
    if not operations:
        return PlannedStep(record.name, record.type, skip_reason="nothing of ours is left")
    return PlannedStep(record.name, record.type, operations=tuple(operations))


def _pod_patch(pod: Mapping[str, Any], patch: dict[str, Any]) -> Operation:
    metadata = pod.get("metadata") or {}
    ref = ObjectRef(
        api_version="v1", kind="Pod", namespace=metadata.get("namespace"), name=metadata["name"]
    )
    return Operation(Verb.PATCH, ref, patch)


def _from_planned(name: str, type_: str, planned: Planned) -> PlannedStep:
    return PlannedStep(
        name,
        type_,
        operations=planned.operations,
        skip_reason=planned.skip_reason,
        rollback=planned.rollback or {},
    )

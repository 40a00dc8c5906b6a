"""plan() and plan_rollback(): only a Matched decision produces steps; every pod action first
checks that the live pod is still the alert's target (namespace, name, container id, not
terminating) and is skipped with a reason otherwise; steps are idempotent across a crash
(recorded rollback facts are reused, finished steps are marked done); rollback undoes only
what the action changed; deletion and scaling follow their safety rules."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from falco_triage.models.alert import ActionRecord, ActionResult, Decision, DecisionOutcome
from falco_triage.policy.decide import decide
from falco_triage.remediation import (
    PlannedStep,
    Verb,
    WorkloadState,
    plan,
    plan_rollback,
    preview_yaml,
    workload_of,
)
from falco_triage.remediation.steps import MAX_PLANNED_YAML
from tests.unit.policy_factories import (
    NOW,
    POD,
    POD_UID,
    annotate_action,
    delete_action,
    isolate_action,
    label_action,
    make_alert,
    make_cluster_policy,
    make_context,
    make_pod,
    make_policy,
    make_spec,
    notify_action,
    scale_action,
)

QUARANTINE = {"falcotriage.io/quarantine": "true"}


def _decision(*actions: dict[str, Any], spec: Any = None) -> Decision:
    policy = make_policy("p", mode="Enforce", actions=list(actions))
    decision = decide(spec or make_spec(), [policy], make_context())
    assert decision.outcome == DecisionOutcome.MATCHED, decision.reason
    return decision


def _plan(*actions: dict[str, Any], pod: Any = None, **kwargs: Any) -> list[PlannedStep]:
    return plan(_decision(*actions), make_alert(), make_pod() if pod is None else pod, **kwargs)


def test_only_a_matched_decision_is_planned() -> None:
    for outcome in (
        DecisionOutcome.NO_MATCH,
        DecisionOutcome.REFUSED,
        DecisionOutcome.RATE_LIMITED,
    ):
        decision = _decision(label_action()).model_copy(update={"outcome": outcome})
        assert plan(decision, make_alert(), make_pod()) == []


def test_label_step_patches_with_the_pod_uid_and_records_previous_values() -> None:
    pod = make_pod(labels={"app": "web", "falcotriage.io/quarantine": "no"})
    (step,) = _plan(label_action(**QUARANTINE), pod=pod)
    (op,) = step.operations
    assert op.verb == Verb.PATCH
    assert (op.target.kind, op.target.namespace, op.target.name) == ("Pod", "shop", POD)
    assert op.body == {"metadata": {"uid": POD_UID, "labels": QUARANTINE}}
    assert step.rollback["previous"] == '{"falcotriage.io/quarantine": "no"}'
    assert step.skip_reason is None
    assert step.done is None


@pytest.mark.parametrize(
    ("pod", "reason"),
    [
        (None, "no longer exists"),
        (make_pod(name="web-other"), "is not the alert's target"),
        (make_pod(namespace="cart"), "is not the alert's target"),
        (make_pod(deleting=True), "already being deleted"),
        (make_pod(container_id="ffff" * 16), "no longer runs container 3f1c9a2b7d4e"),
        (make_pod(container_id=None), "no longer runs container"),
        (make_pod(uid=""), "has no uid"),
    ],
)
def test_pod_actions_are_skipped_when_the_pod_is_not_the_target(
    pod: dict[str, Any] | None, reason: str
) -> None:
    decision = _decision(label_action(), isolate_action(), notify_action())
    steps = plan(decision, make_alert(), pod)
    label, isolate, notify = steps
    assert label.skip_reason is not None
    assert reason in label.skip_reason
    assert isolate.skip_reason == label.skip_reason
    assert label.operations == isolate.operations == ()
    assert notify.skip_reason is None  # notifying needs no pod
    assert [op.verb for op in notify.operations] == [Verb.EVENT]


def test_ephemeral_debug_containers_count_as_the_pod_running_the_container() -> None:
    pod = make_pod(container_id=None)
    pod["status"]["ephemeralContainerStatuses"] = [
        {"name": "debugger", "containerID": "cri-o://3f1c9a2b7d4e" + "0" * 52}
    ]
    (step,) = _plan(label_action(), pod=pod)
    assert step.skip_reason is None


def test_host_alerts_only_notify() -> None:
    spec = make_spec(namespace=None)
    cluster = make_cluster_policy(
        "c",
        mode="Enforce",
        match={"rules": [spec.rule]},
        actions=[label_action(), notify_action(webhookSecretRef={"name": "hook", "key": "url"})],
    )
    decision = decide(spec, [cluster], make_context(namespace_labels=None, pod_labels=None))
    label, notify = plan(decision, make_alert(spec), None, operator_namespace="sec")
    assert label.skip_reason == "the alert concerns no pod (host or cluster-level event)"
    event, webhook = notify.operations
    assert event.verb == Verb.EVENT
    assert event.target.kind == "FalcoAlert"
    assert webhook.verb == Verb.WEBHOOK
    assert (webhook.target.kind, webhook.target.namespace, webhook.target.name) == (
        "Secret",
        "sec",
        "hook",
    )
    assert webhook.secret_key == "url"
    assert set(webhook.body) == {"text"}


def test_protected_namespaces_are_skipped_even_if_a_decision_slipped_through() -> None:
    spec = make_spec(namespace="kube-system")
    decision = _decision(label_action(), notify_action())
    alert = make_alert(spec)
    pod = make_pod(namespace="kube-system")
    steps = plan(decision, alert, pod)
    assert all(s.skip_reason == "namespace 'kube-system' is protected" for s in steps)
    assert all(s.operations == () for s in steps)


def test_isolation_creates_the_network_policy_then_labels_the_pod() -> None:
    (step,) = _plan(isolate_action())
    create, label = step.operations
    assert create.verb == Verb.CREATE
    assert create.body["kind"] == "NetworkPolicy"
    selector = create.body["spec"]["podSelector"]["matchLabels"]
    assert label.verb == Verb.PATCH
    assert label.body == {"metadata": {"uid": POD_UID, "labels": selector}}
    assert step.rollback == {
        "networkPolicy": create.body["metadata"]["name"],
        "label": next(iter(selector)),
    }
    assert [o.kind for o in step.objects] == ["NetworkPolicy", "Pod"]


def test_isolation_needs_the_alert_in_the_pods_namespace() -> None:
    alert = make_alert()
    alert.metadata["namespace"] = "elsewhere"
    (step,) = plan(_decision(isolate_action()), alert, make_pod())
    assert step.skip_reason is not None
    assert "ownerReference cannot cross namespaces" in step.skip_reason


def test_bare_pods_are_not_deleted_unless_allowed() -> None:
    bare = make_pod(controller=None)
    (refused,) = _plan(delete_action(), pod=bare)
    assert refused.skip_reason is not None
    assert "allowBarePods" in refused.skip_reason
    (allowed,) = _plan(delete_action(allowBarePods=True), pod=bare)
    (op,) = allowed.operations
    assert op.verb == Verb.DELETE
    assert op.body == {"gracePeriodSeconds": 30, "preconditions": {"uid": POD_UID}}
    (controlled,) = _plan(delete_action(gracePeriodSeconds=0))
    assert controlled.operations[0].body["gracePeriodSeconds"] == 0


def test_scaling_needs_the_owning_workload() -> None:
    (missing,) = _plan(scale_action())
    assert missing.skip_reason == "pod is not owned by a Deployment or StatefulSet"
    sts = WorkloadState("StatefulSet", "db", "shop", "uid", 2)
    (wrong_kind,) = _plan(scale_action(kinds=["Deployment"]), workload=sts)
    assert wrong_kind.skip_reason is not None
    assert "StatefulSet" in wrong_kind.skip_reason
    (scaled,) = _plan(scale_action(), workload=sts)
    (op,) = scaled.operations
    assert (op.target.kind, op.subresource, op.body) == (
        "StatefulSet",
        "scale",
        {"spec": {"replicas": 0}},
    )
    assert scaled.rollback == {"kind": "StatefulSet", "name": "db", "replicas": "2"}


def test_workload_of_follows_the_controller_chain() -> None:
    rs = {
        "metadata": {
            "name": "web-7d9f8c6b5",
            "uid": "rs-uid",
            "ownerReferences": [
                {"kind": "Deployment", "name": "web", "uid": "dep-uid", "controller": True}
            ],
        }
    }
    owner = workload_of(make_pod(), rs)
    assert owner is not None
    assert (owner.kind, owner.name, owner.uid) == (
        "Deployment",
        "web",
        "dep-uid",
    )
    assert workload_of(make_pod()) is None  # the ReplicaSet was not read: never guess
    assert workload_of(make_pod(), {**rs, "metadata": {**rs["metadata"], "uid": "other"}}) is None
    sts = make_pod(controller=("StatefulSet", "db", "sts-uid"))
    assert workload_of(sts) is not None
    assert workload_of(make_pod(controller=("DaemonSet", "agent", "ds"))) is None
    assert workload_of(make_pod(controller=None)) is None


def test_replanning_after_a_crash_reuses_the_recorded_rollback() -> None:
    """The pod already carries our label; the rollback must still remember it was absent."""
    decision = _decision(label_action(**QUARANTINE))
    (first,) = plan(decision, make_alert(), make_pod())
    started = first.start_record(NOW)
    patched = make_pod(labels={"app": "web", **QUARANTINE})
    (again,) = plan(decision, make_alert(records=[started]), patched)
    assert again.rollback == first.rollback
    assert again.done is None  # Planned: run it again (the merge patch is a no-op now)
    # A DryRun record was never applied: its facts are re-read, not trusted.
    dry = first.dry_run_record()
    (fresh,) = plan(decision, make_alert(records=[dry]), patched)
    assert fresh.rollback != first.rollback


def test_finished_steps_are_marked_done() -> None:
    decision = _decision(label_action(), notify_action())
    label, notify = plan(decision, make_alert(), make_pod())
    records = [label.finish_record(ActionResult.APPLIED, NOW), notify.start_record(NOW)]
    label2, notify2 = plan(decision, make_alert(records=records), make_pod())
    assert label2.done == ActionResult.APPLIED
    assert notify2.done is None


def test_records_carry_the_audit_trail() -> None:
    (step,) = _plan(isolate_action())
    dry = step.dry_run_record()
    assert (dry.result, dry.message) == (ActionResult.PLANNED, "DryRun: not applied")
    assert dry.planned == step.render()
    assert dry.started_at is None
    started = step.start_record(NOW)
    assert (started.result, started.started_at) == (ActionResult.PLANNED, NOW)
    assert started.rollback == dict(step.rollback)
    done = step.finish_record(ActionResult.APPLIED, NOW + timedelta(seconds=1))
    assert done.applied_at == NOW + timedelta(seconds=1)
    assert [o.kind for o in done.objects] == ["NetworkPolicy", "Pod"]
    skipped = _plan(isolate_action(), pod=make_pod(deleting=True))[0].dry_run_record()
    assert skipped.result == ActionResult.SKIPPED
    assert skipped.message.startswith("Would skip: ")


def test_planned_yaml_is_bounded() -> None:
    (step,) = _plan(annotate_action(**{f"k{i}": "v" * 3000 for i in range(10)}))
    record = step.dry_run_record()
    assert record.planned is not None
    assert len(record.planned) <= MAX_PLANNED_YAML


def test_plans_are_deterministic() -> None:
    actions = [label_action(), isolate_action(), notify_action(), delete_action()]
    first = _plan(*actions)
    assert first == _plan(*actions)
    assert [s.render() for s in first] == [s.render() for s in _plan(*actions)]


def test_preview_plans_without_a_cluster() -> None:
    decision = _decision(label_action(), isolate_action(), scale_action(), delete_action())
    alert = make_alert(uid=None)
    text = preview_yaml(decision, alert)
    assert "<uid of the FalcoAlert>" in text
    assert "<uid of the pod>" in text
    assert "whether the pod has a controller is checked at run time" in text
    assert f"<owner of pod {POD}>" in text
    assert "&id" not in text


# -- rollback ---------------------------------------------------------------------------


def _applied(step: PlannedStep) -> ActionRecord:
    return step.finish_record(ActionResult.APPLIED, NOW)


def test_label_rollback_removes_only_what_we_changed() -> None:
    before = {"app": "web", "team": "a", "env": "prod"}
    ours = {"falcotriage.io/quarantine": "true", "team": "quarantined", "env": "prod"}
    (step,) = _plan(label_action(**ours), pod=make_pod(labels=before))
    # After applying, someone changed our "team" value again.
    after = {
        "app": "web",
        "team": "someone-else",
        "env": "prod",
        "falcotriage.io/quarantine": "true",
    }
    back = plan_rollback(_applied(step), make_alert(), make_pod(labels=after))
    (op,) = back.operations
    assert op.body == {"metadata": {"uid": POD_UID, "labels": {"falcotriage.io/quarantine": None}}}


def test_label_rollback_restores_overwritten_values() -> None:
    (step,) = _plan(label_action(team="q"), pod=make_pod(labels={"team": "a"}))
    back = plan_rollback(_applied(step), make_alert(), make_pod(labels={"team": "q"}))
    assert back.operations[0].body["metadata"]["labels"] == {"team": "a"}


def test_annotation_rollback() -> None:
    (step,) = _plan(annotate_action(note="x"), pod=make_pod(annotations={}))
    pod = make_pod(annotations={"note": "x"})
    back = plan_rollback(_applied(step), make_alert(), pod)
    assert back.operations[0].body["metadata"]["annotations"] == {"note": None}
    nothing = plan_rollback(_applied(step), make_alert(), make_pod(annotations={}))
    assert nothing.skip_reason == "nothing of ours is left"


def test_rollback_of_a_gone_or_replaced_pod_does_nothing_to_it() -> None:
    (step,) = _plan(label_action())
    assert plan_rollback(_applied(step), make_alert(), None).skip_reason == "the pod is gone"
    restarted = make_pod(container_id="ffff" * 16, labels=QUARANTINE)
    assert plan_rollback(
        _applied(step), make_alert(), restarted
    ).operations  # same pod, new container


def test_isolation_rollback_deletes_the_policy_and_unlabels_the_pod() -> None:
    (step,) = _plan(isolate_action())
    label_key = step.rollback["label"]
    pod = make_pod(labels={"app": "web", label_key: "true"})
    back = plan_rollback(_applied(step), make_alert(), pod)
    delete, unlabel = back.operations
    assert (delete.verb, delete.target.kind, delete.target.name) == (
        Verb.DELETE,
        "NetworkPolicy",
        step.rollback["networkPolicy"],
    )
    assert delete.target.namespace == "shop"
    assert unlabel.body == {"metadata": {"uid": POD_UID, "labels": {label_key: None}}}
    gone = plan_rollback(_applied(step), make_alert(), None)
    assert [op.verb for op in gone.operations] == [Verb.DELETE]


def test_scale_rollback_only_from_our_zero() -> None:
    workload = WorkloadState("Deployment", "web", "shop", "uid", 4)
    (step,) = _plan(scale_action(), workload=workload)
    record = _applied(step)
    at_zero = WorkloadState("Deployment", "web", "shop", "uid", 0)
    back = plan_rollback(record, make_alert(), None, workload=at_zero)
    assert back.operations[0].body == {"spec": {"replicas": 4}}
    changed = WorkloadState("Deployment", "web", "shop", "uid", 2)
    assert plan_rollback(record, make_alert(), None, workload=changed).skip_reason == (
        "replicas were changed to 2 since; left alone"
    )
    assert plan_rollback(record, make_alert(), None).skip_reason == "the workload no longer exists"


def test_scale_replan_keeps_the_replicas_from_before_the_crash() -> None:
    decision = _decision(scale_action())
    (first,) = plan(
        decision,
        make_alert(),
        make_pod(),
        workload=WorkloadState("Deployment", "web", "shop", "u", 3),
    )
    crashed = make_alert(records=[first.start_record(NOW)])
    (again,) = plan(
        decision, crashed, make_pod(), workload=WorkloadState("Deployment", "web", "shop", "u", 0)
    )
    assert again.rollback["replicas"] == "3"


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        (delete_action(), "cannot be brought back"),
        (notify_action(), "cannot be unsent"),
    ],
)
def test_irreversible_actions_say_so(action: dict[str, Any], reason: str) -> None:
    (step,) = _plan(action)
    back = plan_rollback(_applied(step), make_alert(), make_pod())
    assert back.skip_reason is not None
    assert reason in back.skip_reason


def test_nothing_to_roll_back_for_unapplied_records() -> None:
    (step,) = _plan(label_action())
    assert plan_rollback(step.dry_run_record(), make_alert(), make_pod()).skip_reason == (
        "nothing was applied"
    )


def test_preview_of_a_host_alert_skips_pod_actions() -> None:
    spec = make_spec(namespace=None)
    cluster = make_cluster_policy("c", match={"rules": [spec.rule]}, actions=[label_action()])
    decision = decide(spec, [cluster], make_context(namespace_labels=None, pod_labels=None))
    text = preview_yaml(decision, make_alert(spec, uid=None))
    assert (
        text
        == "# labelPod 'label': skipped: the alert concerns no pod (host or cluster-level event)\n"
    )

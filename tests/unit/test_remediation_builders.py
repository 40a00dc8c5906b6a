"""The pure builders produce exactly the reviewed objects (golden files in
tests/data/golden/remediation/): the isolating NetworkPolicy for each allow-list shape, pod
label/annotation merge patches and their rollbacks, pod deletion, scaling, the Slack
notification, the DryRun rendering and the RBAC table. Builders are deterministic, and the
notification text cannot carry attacker-chosen markup.

Regenerate after an intended change with ``FALCO_TRIAGE_UPDATE_GOLDEN=1 pytest tests/unit``
and review the diff like code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from falco_triage.models.alert import Decision, DecisionOutcome
from falco_triage.models.policy import ACTION_TYPES, DeletePod, IsolatePod, Mode, ScaleWorkload
from falco_triage.remediation import (
    build_annotation_patch,
    build_label_patch,
    build_label_rollback_patch,
    build_network_policy,
    build_notification,
    is_ours,
    network_policy_name,
    plan,
    plan_delete_pod,
    plan_scale,
    plan_scale_rollback,
)
from falco_triage.remediation.metadata_patch import rollback_facts
from falco_triage.remediation.network_policy import DNS_PORTS
from falco_triage.remediation.notify import slack_escape
from falco_triage.remediation.permissions import (
    ACTION_PERMISSIONS,
    OPERATOR_NAMESPACE_PERMISSIONS,
    namespace_permissions_for,
    permissions_for,
)
from falco_triage.remediation.steps import WorkloadState, to_yaml
from tests.unit.policy_factories import (
    ALERT_UID,
    POD_UID,
    isolate_action,
    make_alert,
    make_pod,
    make_policy,
    make_spec,
)

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden" / "remediation"
UPDATE = os.environ.get("FALCO_TRIAGE_UPDATE_GOLDEN") == "1"
ALERT = "terminal-shell-in-container-fec64eb3343f695a"


def assert_golden(name: str, data: Any) -> None:
    """``data`` (an object, or text) equals ``<name>.yaml``; rewritten when updating."""
    text = data if isinstance(data, str) else to_yaml(data)
    path = GOLDEN / f"{name}.yaml"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden file {path}; run with FALCO_TRIAGE_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), f"{path.name} differs from the builder"


NETWORK_POLICIES = {
    "network-policy-deny-all": IsolatePod(),
    "network-policy-allow-lists": IsolatePod(
        allow_cidrs=["10.20.0.0/16", "fd00:1::/64"], allow_namespaces=["monitoring"]
    ),
    "network-policy-ingress-only": IsolatePod(deny_egress=False, allow_namespaces=["ingress"]),
    "network-policy-egress-no-dns": IsolatePod(
        deny_ingress=False, allow_dns=False, allow_cidrs=["192.0.2.0/24"]
    ),
}


@pytest.mark.parametrize("name", sorted(NETWORK_POLICIES))
def test_network_policy_golden(name: str) -> None:
    obj = build_network_policy(
        ALERT, ALERT_UID, "shop", "web-1", NETWORK_POLICIES[name], policy="ResponsePolicy/shop/p"
    )
    assert_golden(name, obj)


def test_network_policy_selects_exactly_the_labelled_pod_and_is_owned() -> None:
    obj = build_network_policy(ALERT, ALERT_UID, "shop", "web-1", IsolatePod())
    assert obj["metadata"]["name"] == network_policy_name("shop", ALERT)
    assert obj["metadata"]["name"].startswith("falco-triage-isolate-")
    selector = obj["spec"]["podSelector"]
    assert list(selector) == ["matchLabels"]
    ((key, value),) = selector["matchLabels"].items()
    assert key.startswith("falcotriage.io/isolated-")
    assert value == "true"
    assert obj["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "falco-triage",
        "falcotriage.io/alert": ALERT,
    }
    assert obj["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "falcotriage.io/v1alpha1",
            "kind": "FalcoAlert",
            "name": ALERT,
            "uid": ALERT_UID,
            "controller": False,
            "blockOwnerDeletion": False,
        }
    ]
    assert obj["spec"]["ingress"] == []  # listed type, no rule: deny all
    assert obj["spec"]["egress"] == [{"to": [_kube_dns()], "ports": DNS_PORTS}]
    assert is_ours(obj, ALERT, ALERT_UID)
    assert not is_ours(obj, ALERT, "another-uid")
    assert not is_ours(obj, "other-alert")


def _kube_dns() -> dict[str, Any]:
    return {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }


def test_network_policy_names_are_deterministic_and_distinct() -> None:
    assert network_policy_name("shop", ALERT) == network_policy_name("shop", ALERT)
    assert network_policy_name("shop", ALERT) != network_policy_name("shop", ALERT + "x")
    assert network_policy_name("shop", ALERT) != network_policy_name("cart", ALERT)
    first = build_network_policy(ALERT, ALERT_UID, "shop", "web-1", IsolatePod())
    assert first == build_network_policy(ALERT, ALERT_UID, "shop", "web-1", IsolatePod())


def test_label_patch_and_its_rollback_golden() -> None:
    current = {"app": "web", "team": "a", "falcotriage.io/quarantine": "old"}
    ours = {"falcotriage.io/quarantine": "true", "falcotriage.io/alert": "x", "app": "web"}
    facts = rollback_facts(ours, current)
    after = {**current, **ours}
    assert_golden("label-patch", build_label_patch(ours, POD_UID))
    assert_golden("label-rollback-facts", facts)
    assert_golden("label-rollback-patch", build_label_rollback_patch(facts, after, POD_UID))


def test_annotation_patch_golden() -> None:
    assert_golden(
        "annotation-patch", build_annotation_patch({"falcotriage.io/reason": "shell"}, POD_UID)
    )


def test_delete_pod_golden() -> None:
    planned = plan_delete_pod(make_pod(), DeletePod(grace_period_seconds=5))
    (op,) = planned.operations
    assert_golden("delete-pod", {"target": op.target.wire(), "options": op.body})


def test_scale_and_rollback_golden() -> None:
    workload = WorkloadState("Deployment", "web", "shop", "dep-uid", 3)
    planned = plan_scale(workload, ScaleWorkload())
    (op,) = planned.operations
    assert planned.rollback is not None
    zero = WorkloadState("Deployment", "web", "shop", "dep-uid", 0)
    (back,) = plan_scale_rollback(planned.rollback, zero).operations
    assert_golden(
        "scale",
        {
            "target": op.target.wire(),
            "subresource": op.subresource,
            "patch": op.body,
            "rollbackFacts": dict(planned.rollback),
            "rollbackPatch": back.body,
        },
    )


def test_notification_golden() -> None:
    spec = make_spec()
    decision = Decision(
        outcome=DecisionOutcome.MATCHED,
        policy="ResponsePolicy/shop/shells",
        mode=Mode.ENFORCE,
        actions=["isolate", "tell"],
    )
    assert_golden("notification", build_notification(ALERT, "shop", spec, decision))


def test_notification_text_cannot_carry_markup_or_untrusted_output() -> None:
    hostile = "evil`*bold*` <!channel> <https://x.example|click> & more\nnew line"
    spec = make_spec(
        hostile,
        pod="web-1",
        output="SECRET-OUTPUT-LINE",
        **{"container.name": hostile, "proc.cmdline": "SECRET-CMDLINE"},
    )
    decision = Decision(outcome=DecisionOutcome.MATCHED, policy="p", mode=Mode.ENFORCE)
    text = build_notification(ALERT, "shop", spec, decision)["text"]
    assert "<" not in text.replace("&lt;", "")
    assert ">" not in text.replace("&gt;", "")
    assert "<!channel>" not in text
    assert "&lt;!channel&gt;" in text
    assert "SECRET" not in text
    assert text.count("\n") == 3  # the four lines we wrote, none injected
    for line in text.splitlines():
        assert line.count("`") % 2 == 0  # every value stays inside its code span
    assert slack_escape("a`b") == "a'b"
    assert slack_escape("x" * 500).endswith("…[truncated]")


def test_dry_run_rendering_golden() -> None:
    policy = make_policy(
        "isolate", mode="DryRun", actions=[isolate_action(allowNamespaces=["monitoring"])]
    )
    decision = Decision(
        outcome=DecisionOutcome.MATCHED,
        policy="ResponsePolicy/shop/isolate",
        mode=Mode.DRY_RUN,
        actions=["isolate"],
        action_specs=policy.spec.actions,
    )
    (step,) = plan(decision, make_alert(), make_pod())
    rendered = step.render()
    assert_golden("dry-run-isolate", rendered)
    assert "&id" not in rendered  # no YAML anchors: every object shown in full
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    assert [d.get("kind") for d in documents] == ["NetworkPolicy", None]
    assert step.dry_run_record().planned == rendered


def test_permissions_golden_and_complete() -> None:
    assert set(ACTION_PERMISSIONS) == set(ACTION_TYPES)
    assert set(OPERATOR_NAMESPACE_PERMISSIONS) <= set(ACTION_TYPES)
    assert_golden(
        "permissions",
        {
            "clusterRole": ACTION_PERMISSIONS,
            "operatorNamespaceRole": OPERATOR_NAMESPACE_PERMISSIONS,
        },
    )


def test_permissions_merge_and_stay_least_privilege() -> None:
    rules = permissions_for(["labelPod", "isolatePod"])
    assert rules == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]},
        {
            "apiGroups": ["networking.k8s.io"],
            "resources": ["networkpolicies"],
            "verbs": ["create", "delete", "get"],
        },
    ]
    scale = json.dumps(permissions_for(["scaleWorkload"]))
    assert '"deployments"' not in scale  # only the scale subresource: no image changes
    assert "secrets" not in json.dumps(permissions_for(ACTION_TYPES))
    assert namespace_permissions_for(["notify"]) == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
    ]
    with pytest.raises(ValueError, match="unknown action type"):
        permissions_for(["rebootNode"])

"""Policy validation: every semantic mistake the CRD schema cannot catch gets one clear
message naming the field by its YAML path; valid policies get none; no input, however
malformed, makes validation raise. Also the duration grammar and the Valid condition."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from falco_triage.models.common import ConditionStatus
from falco_triage.policy.duration import parse_duration
from falco_triage.policy.validate import parse_policy, validity_condition
from tests.unit.policy_factories import (
    NOW,
    annotate_action,
    delete_action,
    isolate_action,
    label_action,
    notify_action,
    policy_body,
    scale_action,
)


def _errors(**kwargs: Any) -> list[str]:
    parsed = parse_policy(policy_body(**kwargs))
    assert parsed.policy is not None, parsed.errors  # schema-valid, so only semantics fail
    return list(parsed.errors)


def _cluster_errors(**kwargs: Any) -> list[str]:
    return _errors(kind="ClusterResponsePolicy", namespace=None, **kwargs)


def test_a_plain_policy_is_valid() -> None:
    parsed = parse_policy(policy_body())
    assert parsed.valid
    assert parsed.errors == ()
    assert parsed.ref == "ResponsePolicy/shop/policy"


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        ({}, "spec.match: sets no criteria and would match every alert"),
        ({"rules": ["  "]}, "spec.match.rules[0]: empty rule name"),
        ({"tags": {}}, "spec.match.tags: set any, all or both"),
        ({"tags": {"any": [""]}}, "spec.match.tags.any[0]: empty tag"),
        ({"sources": ["Sys Call"]}, "spec.match.sources[0]: 'Sys Call' is not a Falco source"),
        (
            {"outputFields": [{"field": "%proc.name", "operator": "equals", "value": "sh"}]},
            "spec.match.outputFields[0].field: write the field name without '%'",
        ),
        (
            {"outputFields": [{"field": "proc name", "operator": "equals", "value": "sh"}]},
            "does not look like a Falco field name",
        ),
        (
            {"outputFields": [{"field": "proc.name", "operator": "in"}]},
            "spec.match.outputFields[0].values: operator 'in' needs at least one value",
        ),
        (
            {"outputFields": [{"field": "proc.name", "operator": "in", "value": "sh"}]},
            "operator 'in' takes values (a list), not value",
        ),
        (
            {"outputFields": [{"field": "proc.name", "operator": "equals"}]},
            "spec.match.outputFields[0].value: operator 'equals' needs value",
        ),
        (
            {"outputFields": [{"field": "proc.name", "operator": "prefix", "values": ["a"]}]},
            "operator 'prefix' takes value, not values",
        ),
        (
            {"podSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}},
            "spec.match.podSelector.matchExpressions[0]: operator In needs values",
        ),
        (
            {
                "podSelector": {
                    "matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]
                }
            },
            "operator Exists takes no values",
        ),
        (
            {"podSelector": {"matchLabels": {"-bad": "x"}}},
            "spec.match.podSelector.matchLabels: key '-bad'",
        ),
        (
            {"podSelector": {"matchLabels": {"app": "not valid!"}}},
            "label value 'not valid!'",
        ),
        (
            {"podSelector": {"matchLabels": {"Example.COM/app": "x"}}},
            "key prefix 'Example.COM' must be a DNS subdomain",
        ),
    ],
)
def test_match_mistakes_are_reported(match: dict[str, Any], expected: str) -> None:
    errors = _errors(match=match)
    assert any(expected in e for e in errors), errors


@pytest.mark.parametrize(
    "field", ["proc.name", "proc.aname[2]", "jevt.value[/requestObject/spec]", "my_extra_field"]
)
def test_falco_field_names_are_accepted(field: str) -> None:
    match = {"outputFields": [{"field": field, "operator": "equals", "value": "x"}]}
    assert _errors(match=match) == []


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        ({"namespaces": ["kube-system"]}, "'kube-system' is a protected namespace"),
        ({"namespaces": ["falco-triage"]}, "'falco-triage' is a protected namespace"),
        ({"namespaces": ["Not_A_Namespace"]}, "is not a valid namespace name or glob"),
        (
            {"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "NotIn"}]}},
            "spec.match.namespaceSelector.matchExpressions[0]: operator NotIn needs values",
        ),
    ],
)
def test_cluster_match_mistakes_are_reported(match: dict[str, Any], expected: str) -> None:
    parsed = parse_policy(
        policy_body(kind="ClusterResponsePolicy", namespace=None, match=match),
        protected_namespaces=["kube-system", "falco-triage"],
    )
    assert any(expected in e for e in parsed.errors), parsed.errors


def test_namespace_globs_may_cover_protected_namespaces() -> None:
    """``kube-*`` is fine: protected namespaces are refused at decision time anyway."""
    assert _cluster_errors(match={"namespaces": ["kube-*", "team-?"]}) == []


def test_a_response_policy_in_a_protected_namespace_is_invalid() -> None:
    errors = _errors(namespace="kube-system")
    assert any("'kube-system' is a protected namespace" in e for e in errors), errors


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"ttl": "0s"}, "spec.ttl: must be longer than zero"),
        ({"ttl": "400d"}, "spec.ttl: '400d' is longer than 366 days"),
        ({"rateLimit": {"maxActions": 1, "window": "0m"}}, "spec.rateLimit.window: must be longer"),
    ],
)
def test_durations_are_checked(spec: dict[str, Any], expected: str) -> None:
    errors = _errors(**spec)
    assert any(expected in e for e in errors), errors


@pytest.mark.parametrize(
    ("actions", "expected"),
    [
        ([label_action("a"), notify_action("a")], "action name 'a' is used 2 times"),
        ([isolate_action("a"), isolate_action("b")], "isolatePod may appear at most once"),
        (
            [delete_action("a"), label_action("b")],
            "spec.actions[1]: labelPod cannot run after deletePod",
        ),
        ([{"name": "a"}], "spec.actions[0]: set exactly one of"),
        (
            [{"name": "a", "notify": {}, "labelPod": {"labels": {"a": "b"}}}],
            "(found labelPod, notify)",
        ),
        ([label_action(**{"app": "bad value!"})], "spec.actions[0].labelPod.labels: label value"),
        ([label_action(**{"kubernetes.io/role": "x"})], "reserved for Kubernetes components"),
        ([label_action(**{"node.k8s.io/x": "y"})], "reserved for Kubernetes components"),
        ([label_action(**{"falcotriage.io/isolated-abc": "true"})], "reserved for isolatePod"),
        ([annotate_action(**{"bad key!": "x"})], "spec.actions[0].annotatePod.annotations: key"),
        ([annotate_action(**{"a": "x" * 70000})], "keep them under 64 KiB"),
        (
            [isolate_action(denyIngress=False, denyEgress=False)],
            "denies neither ingress nor egress",
        ),
        (
            [isolate_action(allowCidrs=["10.0.0.0"])],
            "allowCidrs[0]: '10.0.0.0' needs a prefix length",
        ),
        (
            [isolate_action(allowCidrs=["10.0.0.1/8"])],
            "is not a valid CIDR: 10.0.0.1/8 has host bits",
        ),
        ([isolate_action(allowCidrs=["300.0.0.0/8"])], "is not a valid CIDR"),
        ([isolate_action(allowCidrs=["0.0.0.0/0"])], "allows every address"),
        ([isolate_action(allowCidrs=["::/0"])], "allows every address"),
        (
            [isolate_action(allowNamespaces=["Monitoring"])],
            "allowNamespaces[0]: 'Monitoring' is not",
        ),
        ([isolate_action(allowNamespaces=["m", "m"])], "'m' is listed 2 times"),
        ([scale_action(kinds=["DaemonSet"])], "'DaemonSet' cannot be scaled"),
        ([scale_action(kinds=[])], "name at least one of Deployment, StatefulSet"),
        ([scale_action(kinds=["Deployment", "Deployment"])], "lists a kind twice"),
        ([notify_action(event=False)], "sends nothing"),
        (
            [notify_action(webhookSecretRef={"name": "Bad_Name", "key": "url"})],
            "webhookSecretRef.name: 'Bad_Name' is not a Secret name",
        ),
        (
            [notify_action(webhookSecretRef={"name": "hook", "key": "a/b"})],
            "webhookSecretRef.key: 'a/b' is not a Secret key",
        ),
    ],
)
def test_action_mistakes_are_reported(actions: list[dict[str, Any]], expected: str) -> None:
    errors = _errors(actions=actions)
    assert any(expected in e for e in errors), errors


def test_good_actions_are_valid() -> None:
    actions = [
        notify_action("tell", webhookSecretRef={"name": "slack", "key": "url"}),
        label_action("label", **{"app.kubernetes.io/part-of": "quarantine"}),
        annotate_action("annotate"),
        isolate_action("isolate", allowCidrs=["10.0.0.0/8", "fd00::/8"], allowNamespaces=["mon"]),
        scale_action("scale", kinds=["StatefulSet"]),
        delete_action("delete", gracePeriodSeconds=0),
        notify_action("after-delete"),
    ]
    assert _errors(actions=actions, ttl="1h30m", rateLimit={"maxActions": 5, "window": "10m"}) == []


def test_schema_errors_name_the_yaml_path() -> None:
    body = policy_body(mode="Yolo", actions=[isolate_action(allowCidrs="10.0.0.0/8")])
    parsed = parse_policy(body)
    assert parsed.policy is None
    assert any(e.startswith("spec.mode: Input should be 'DryRun'") for e in parsed.errors)
    assert any(e.startswith("spec.actions[0].isolatePod.allowCidrs:") for e in parsed.errors)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"kind": "ConfigMap"}, "kind: expected ResponsePolicy or ClusterResponsePolicy"),
        ({**policy_body(), "apiVersion": "v1"}, "apiVersion: expected falcotriage.io/v1alpha1"),
        ({**policy_body(), "metadata": {}}, "metadata.name: required"),
        ({**policy_body(), "metadata": {"name": "Not Valid"}}, "is not a valid Kubernetes name"),
        ({**policy_body(), "spec": []}, "spec: Input should be a valid dictionary"),
        ({**policy_body(), "metadata": "oops"}, "metadata: Input should be a valid dictionary"),
        ({**policy_body(), "spec": {"match": {"rules": [1]}}}, "spec.match.rules[0]"),
    ],
)
def test_malformed_objects_never_raise(body: dict[str, Any], expected: str) -> None:
    parsed = parse_policy(body)
    assert not parsed.valid
    assert any(expected in e for e in parsed.errors), parsed.errors


def test_a_cluster_policy_cannot_use_namespaced_fields_and_vice_versa() -> None:
    body = policy_body(match={"rules": ["x"], "namespaces": ["a"]})
    parsed = parse_policy(body)
    assert any("spec.match.namespaces: Extra inputs are not permitted" in e for e in parsed.errors)


def test_valid_condition() -> None:
    condition = validity_condition([], now=NOW, generation=3)
    assert (condition.type, condition.status, condition.reason) == (
        "Valid",
        ConditionStatus.TRUE,
        "Valid",
    )
    assert condition.observed_generation == 3


def test_invalid_condition_carries_every_message() -> None:
    condition = validity_condition(["spec.ttl: bad", "spec.actions: worse"], now=NOW)
    assert condition.status == ConditionStatus.FALSE
    assert condition.reason == "Invalid"
    assert "spec.ttl: bad; spec.actions: worse" in condition.message
    long = validity_condition(["x" * 3000, "y" * 3000], now=NOW)
    assert len(long.message) <= 4096


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("7d", timedelta(days=7)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("90m", timedelta(minutes=90)),
    ],
)
def test_durations_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "1", "h", "1.5h", "10ms", "1h 30m", "-1h", "1w", "99999999999d"]
)
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|longer than"):
        parse_duration(text)

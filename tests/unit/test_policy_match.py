"""Policy matching: each criterion (rules, sources, priority, tags, output fields, pod and
namespace selectors, namespaces) holds or fails exactly as documented, and a failed match
names the first criterion that said no, so a user can see why a policy did not apply."""

from __future__ import annotations

from typing import Any

import pytest

from falco_triage.models.priority import Priority
from falco_triage.policy.match import match_policy
from tests.unit.policy_factories import make_cluster_policy, make_policy, make_spec

SHELL = "Terminal shell in container"
SPEC = make_spec(SHELL, **{"proc.name": "bash", "fd.name": "/etc/shadow"})


def _match(
    match: dict[str, Any],
    *,
    spec: Any = SPEC,
    pod_labels: dict[str, str] | None = None,
    namespace_labels: dict[str, str] | None = None,
    cluster: bool = False,
) -> tuple[bool, str | None, str]:
    policy = make_cluster_policy(match=match) if cluster else make_policy(match=match)
    result = match_policy(
        policy,
        spec,
        namespace_labels={} if namespace_labels is None else namespace_labels,
        pod_labels={} if pod_labels is None else pod_labels,
    )
    return result.matched, result.criterion, result.detail


@pytest.mark.parametrize(
    ("rules", "matched"),
    [
        ([SHELL], True),
        (["Terminal shell*"], True),
        (["*shell in container"], True),
        (["Terminal ?hell in container"], True),
        (["terminal shell in container"], False),  # case-sensitive, like Falco
        (["Terminal shell"], False),  # no implicit prefix match
        (["Read sensitive file untrusted", SHELL], True),  # any of the list
    ],
)
def test_rules_exact_or_glob(rules: list[str], matched: bool) -> None:
    assert _match({"rules": rules})[0] is matched


def test_a_rule_name_with_glob_characters_matches_itself_exactly() -> None:
    spec = make_spec("Weird [rule] name?")
    assert _match({"rules": ["Weird [rule] name?"]}, spec=spec)[0]


def test_sources() -> None:
    assert _match({"sources": ["syscall"]})[0]
    matched, criterion, detail = _match({"sources": ["k8s_audit"]})
    assert (matched, criterion) == (False, "spec.match.sources")
    assert "'syscall'" in detail


@pytest.mark.parametrize(
    ("minimum", "matched"),
    [(Priority.DEBUG, True), (Priority.NOTICE, True), (Priority.WARNING, False)],
)
def test_min_priority_is_inclusive(minimum: Priority, matched: bool) -> None:
    assert SPEC.priority == Priority.NOTICE
    assert _match({"minPriority": minimum.value})[0] is matched


def test_min_priority_failure_explains() -> None:
    assert _match({"minPriority": "Critical"}) == (
        False,
        "spec.match.minPriority",
        "priority Notice is below Critical",
    )


@pytest.mark.parametrize(
    ("tags", "matched", "criterion"),
    [
        ({"any": ["shell", "nope"]}, True, None),
        ({"any": ["nope"]}, False, "spec.match.tags.any"),
        ({"all": ["shell", "mitre_execution"]}, True, None),
        ({"all": ["shell", "nope"]}, False, "spec.match.tags.all"),
        ({"any": ["shell"], "all": ["container"]}, True, None),
        ({"any": ["shell"], "all": ["network"]}, False, "spec.match.tags.all"),
    ],
)
def test_tags_any_and_all(tags: dict[str, list[str]], matched: bool, criterion: str | None) -> None:
    result = _match({"tags": tags})
    assert result[:2] == (matched, criterion)


@pytest.mark.parametrize(
    ("condition", "matched"),
    [
        ({"operator": "equals", "value": "bash"}, True),
        ({"operator": "equals", "value": "sh"}, False),
        ({"operator": "notEquals", "value": "sh"}, True),
        ({"operator": "notEquals", "value": "bash"}, False),
        ({"operator": "in", "values": ["sh", "bash"]}, True),
        ({"operator": "in", "values": ["sh", "zsh"]}, False),
        ({"operator": "glob", "value": "*sh"}, True),
        ({"operator": "glob", "value": "z*"}, False),
        ({"operator": "prefix", "value": "ba"}, True),
        ({"operator": "prefix", "value": "sh"}, False),
    ],
)
def test_output_field_operators(condition: dict[str, Any], matched: bool) -> None:
    assert _match({"outputFields": [{"field": "proc.name", **condition}]})[0] is matched


@pytest.mark.parametrize(
    "condition",
    [
        {"operator": "equals", "value": "x"},
        {"operator": "notEquals", "value": "x"},
        {"operator": "in", "values": ["x"]},
        {"operator": "glob", "value": "*"},
        {"operator": "prefix", "value": ""},
    ],
)
def test_a_missing_field_fails_every_operator(condition: dict[str, Any]) -> None:
    """No positive evidence, no action: even ``notEquals`` fails on an absent field."""
    matched, criterion, detail = _match({"outputFields": [{"field": "fd.rip", **condition}]})
    assert (matched, criterion) == (False, "spec.match.outputFields[0]")
    assert detail == "the alert has no field fd.rip"


def test_a_null_field_counts_as_missing() -> None:
    spec = make_spec(SHELL, **{"proc.name": None})
    match = {"outputFields": [{"field": "proc.name", "operator": "notEquals", "value": "sh"}]}
    assert not _match(match, spec=spec)[0]


def test_every_output_condition_must_hold_and_the_failing_one_is_named() -> None:
    conditions = [
        {"field": "proc.name", "operator": "equals", "value": "bash"},
        {"field": "fd.name", "operator": "prefix", "value": "/root"},
    ]
    matched, criterion, detail = _match({"outputFields": conditions})
    assert (matched, criterion) == (False, "spec.match.outputFields[1]")
    assert detail == "fd.name '/etc/shadow' fails prefix '/root'"


@pytest.mark.parametrize(
    ("selector", "matched"),
    [
        ({}, True),
        ({"matchLabels": {"app": "web"}}, True),
        ({"matchLabels": {"app": "db"}}, False),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x"]}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["x"]}]}, False),
    ],
)
def test_pod_selector_has_kubernetes_semantics(selector: dict[str, Any], matched: bool) -> None:
    assert _match({"podSelector": selector}, pod_labels={"app": "web"})[0] is matched


def test_pod_selector_with_unknown_pod_labels_does_not_match() -> None:
    policy = make_policy(match={"podSelector": {}})
    result = match_policy(policy, SPEC, namespace_labels={}, pod_labels=None)
    assert (result.matched, result.criterion) == (False, "spec.match.podSelector")
    assert "not known" in result.detail


def test_pod_selector_never_matches_a_host_alert() -> None:
    host = make_spec(SHELL, namespace=None)
    policy = make_cluster_policy(match={"podSelector": {}})
    result = match_policy(policy, host, namespace_labels=None, pod_labels=None)
    assert (result.matched, result.detail) == (False, "the alert concerns no pod")


def test_a_response_policy_applies_only_in_its_own_namespace() -> None:
    elsewhere = make_policy(namespace="payments", match={"rules": [SHELL]})
    result = match_policy(elsewhere, SPEC, namespace_labels={}, pod_labels={})
    assert (result.matched, result.criterion) == (False, "metadata.namespace")
    assert "'payments'" in result.detail
    host = make_spec(SHELL, namespace=None)
    assert not match_policy(make_policy(), host, namespace_labels={}, pod_labels={}).matched


@pytest.mark.parametrize(
    ("namespaces", "matched"),
    [(["shop"], True), (["sh*"], True), (["payments", "s?op"], True), (["payments"], False)],
)
def test_cluster_namespaces_are_globs(namespaces: list[str], matched: bool) -> None:
    assert _match({"namespaces": namespaces}, cluster=True)[0] is matched


def test_cluster_namespace_selector() -> None:
    match = {"namespaceSelector": {"matchLabels": {"env": "prod"}}}
    assert _match(match, cluster=True, namespace_labels={"env": "prod"})[0]
    assert _match(match, cluster=True, namespace_labels={"env": "dev"})[1] == (
        "spec.match.namespaceSelector"
    )
    policy = make_cluster_policy(match=match)
    unknown = match_policy(policy, SPEC, namespace_labels=None, pod_labels={})
    assert "are not known" in unknown.detail


def test_cluster_namespace_criteria_never_match_host_alerts() -> None:
    host = make_spec(SHELL, namespace=None)
    for match in ({"namespaces": ["*"]}, {"namespaceSelector": {}}):
        policy = make_cluster_policy(match=match)
        result = match_policy(policy, host, namespace_labels=None, pod_labels=None)
        assert "no namespace" in result.detail


def test_a_cluster_policy_without_namespace_criteria_matches_host_alerts() -> None:
    host = make_spec(SHELL, namespace=None)
    policy = make_cluster_policy(match={"rules": [SHELL]})
    assert match_policy(policy, host, namespace_labels=None, pod_labels=None).matched


def test_all_criteria_together() -> None:
    match = {
        "rules": ["Terminal*"],
        "sources": ["syscall"],
        "minPriority": "Notice",
        "tags": {"any": ["shell"]},
        "outputFields": [{"field": "proc.name", "operator": "in", "values": ["bash"]}],
        "podSelector": {"matchLabels": {"app": "web"}},
        "namespaces": ["shop"],
        "namespaceSelector": {"matchLabels": {"team": "a"}},
    }
    assert _match(match, cluster=True, pod_labels={"app": "web"}, namespace_labels={"team": "a"})[0]
    assert _match(match, cluster=True, pod_labels={"app": "web"}, namespace_labels={})[1] == (
        "spec.match.namespaceSelector"
    )

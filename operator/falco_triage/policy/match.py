"""Does a policy match an alert? And if not, which criterion said no (for explanations).

Every criterion the policy sets must hold (AND); a list criterion holds when any element
matches (OR). Criteria read only the alert's ``spec`` (the Falco event as received) and the
labels of its namespace and pod as the cluster reports them, never the analysis or anything
a language model wrote.

Rule names and namespace patterns are shell-style globs (``*``, ``?``, ``[...]``),
case-sensitive like Falco's own rule names; a pattern that is exactly the rule name always
matches, even if the name contains glob characters.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from falco_triage.models.alert import FalcoAlertSpec
from falco_triage.models.policy import (
    ClusterResponsePolicy,
    FieldCondition,
    FieldOperator,
    Match,
)
from falco_triage.policy.labels import selector_matches
from falco_triage.policy.refs import AnyPolicy, policy_namespace

_SHOWN = 3  # list at most this many patterns in an explanation


@dataclass(frozen=True)
class MatchResult:
    """``matched``, or the first criterion (its YAML path) that failed and why."""

    matched: bool
    criterion: str | None = None
    detail: str = ""

    def __bool__(self) -> bool:
        return self.matched


MATCHED = MatchResult(True)


def match_policy(
    policy: AnyPolicy,
    spec: FalcoAlertSpec,
    *,
    namespace_labels: Mapping[str, str] | None,
    pod_labels: Mapping[str, str] | None,
) -> MatchResult:
    """Whether ``policy`` applies to the alert; ``None`` labels mean "not known"."""
    scope = _scope(policy, spec, namespace_labels)
    if not scope:
        return scope
    return match_criteria(policy.spec.match, spec, pod_labels=pod_labels)


def match_criteria(
    match: Match, spec: FalcoAlertSpec, *, pod_labels: Mapping[str, str] | None
) -> MatchResult:
    """The criteria every policy kind shares (everything but namespaces)."""
    if match.rules and not any(_glob(spec.rule, p) for p in match.rules):
        return _fail("rules", f"rule {spec.rule!r} is not {_listing(match.rules)}")
    if match.sources and spec.source not in match.sources:
        return _fail("sources", f"source {spec.source!r} is not {_listing(match.sources)}")
    if match.min_priority is not None and spec.priority.rank < match.min_priority.rank:
        return _fail(
            "minPriority",
            f"priority {spec.priority.value} is below {match.min_priority.value}",
        )
    if match.tags is not None:
        tags = set(spec.tags)
        if match.tags.any and not tags.intersection(match.tags.any):
            return _fail("tags.any", f"the alert has none of the tags {_listing(match.tags.any)}")
        missing = [t for t in match.tags.all if t not in tags]
        if missing:
            return _fail("tags.all", f"the alert lacks the tags {_listing(missing)}")
    for index, condition in enumerate(match.output_fields):
        if reason := _condition_failure(condition, spec.output_fields):
            return _fail(f"outputFields[{index}]", reason)
    if match.pod_selector is not None:
        if spec.target.pod is None:
            return _fail("podSelector", "the alert concerns no pod")
        if pod_labels is None:
            return _fail("podSelector", "the pod's labels are not known (pod not found)")
        if not selector_matches(match.pod_selector, pod_labels):
            return _fail("podSelector", "the pod's labels do not match the selector")
    return MATCHED


def _scope(
    policy: AnyPolicy, spec: FalcoAlertSpec, namespace_labels: Mapping[str, str] | None
) -> MatchResult:
    namespace = spec.target.namespace
    if not isinstance(policy, ClusterResponsePolicy):
        own = policy_namespace(policy)
        if namespace is None or own != namespace:
            where = f"is in {namespace!r}" if namespace else "concerns no namespace"
            return MatchResult(
                False,
                "metadata.namespace",
                f"the policy covers namespace {own!r} only; the alert {where}",
            )
        return MATCHED
    match = policy.spec.match
    if match.namespaces:
        if namespace is None:
            return _fail("namespaces", "the alert concerns no namespace (host or cluster)")
        if not any(_glob(namespace, p) for p in match.namespaces):
            return _fail(
                "namespaces", f"namespace {namespace!r} is not {_listing(match.namespaces)}"
            )
    if match.namespace_selector is not None:
        if namespace is None:
            return _fail("namespaceSelector", "the alert concerns no namespace (host or cluster)")
        if namespace_labels is None:
            return _fail(
                "namespaceSelector", f"the labels of namespace {namespace!r} are not known"
            )
        if not selector_matches(match.namespace_selector, namespace_labels):
            return _fail(
                "namespaceSelector", f"namespace {namespace!r} does not match the selector"
            )
    return MATCHED


def _condition_failure(condition: FieldCondition, fields: Mapping[str, str | None]) -> str | None:
    """Why the condition does not hold, or None when it does.

    NB: a field the alert does not carry (or carries as null) fails *every* operator,
    ``notEquals`` included: acting requires positive evidence, and a rule that does not print a
    field says nothing about it.
    """
    name = condition.field
    actual = fields.get(name)
    if actual is None:
        return f"the alert has no field {name}"
    value = condition.value or ""
    match condition.operator:
        case FieldOperator.EQUALS:
            holds = actual == value
        case FieldOperator.NOT_EQUALS:
            holds = actual != value
        case FieldOperator.IN:
            holds = actual in condition.values
        case FieldOperator.GLOB:
            holds = _glob(actual, value)
        case FieldOperator.PREFIX:
            holds = actual.startswith(value)
    if holds:
        return None
    expected = _listing(condition.values) if condition.operator == FieldOperator.IN else repr(value)
    return f"{name} {_shorten(actual)!r} fails {condition.operator.value} {expected}"


def _glob(text: str, pattern: str) -> bool:
    return text == pattern or fnmatch.fnmatchcase(text, pattern)


def _fail(criterion: str, detail: str) -> MatchResult:
    return MatchResult(False, f"spec.match.{criterion}", detail)


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in items[:_SHOWN])
    more = f" (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return f"[{shown}{more}]"


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

"""Kubernetes label syntax and label-selector semantics, as the API server defines them.

Validation mirrors apimachinery's ``IsQualifiedName`` / ``IsValidLabelValue`` so that a policy
that passes here is not rejected later when its labels are written to a pod; matching mirrors
``metav1.LabelSelector`` (``NotIn`` and ``DoesNotExist`` hold when the key is absent).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from falco_triage.models.policy import LabelSelector, SelectorOperator, SelectorRequirement

_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_MAX_NAME = 63
_MAX_PREFIX = 253
_MAX_VALUE = 63


def key_error(key: str) -> str | None:
    """Why ``key`` is not a valid label/annotation key (qualified name), or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        return f"key {key[:80]!r} has an empty prefix before '/'"
    if prefix and (len(prefix) > _MAX_PREFIX or not _PREFIX.match(prefix)):
        return f"key prefix {prefix[:80]!r} must be a DNS subdomain (lowercase, dots)"
    if not name or len(name) > _MAX_NAME or not _NAME.match(name):
        return (
            f"key {key[:80]!r}: the name part must be 1-63 characters of letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit"
        )
    return None


def value_error(value: str) -> str | None:
    """Why ``value`` is not a valid label value, or None."""
    if len(value) > _MAX_VALUE or not _VALUE.match(value):
        return (
            f"label value {value[:80]!r} must be at most 63 characters of letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit (or empty)"
        )
    return None


def is_dns_label(name: str) -> bool:
    """A namespace name (RFC 1123 label)."""
    return len(name) <= _MAX_NAME and _DNS_LABEL.match(name) is not None


def selector_errors(selector: LabelSelector, path: str) -> list[str]:
    errors: list[str] = []
    for key, value in selector.match_labels.items():
        if problem := key_error(key) or value_error(value):
            errors.append(f"{path}.matchLabels: {problem}")
    for index, requirement in enumerate(selector.match_expressions):
        where = f"{path}.matchExpressions[{index}]"
        if problem := key_error(requirement.key):
            errors.append(f"{where}.key: {problem}")
        wants_values = requirement.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)
        if wants_values and not requirement.values:
            errors.append(f"{where}: operator {requirement.operator.value} needs values")
        if not wants_values and requirement.values:
            errors.append(f"{where}: operator {requirement.operator.value} takes no values")
        for value in requirement.values:
            if problem := value_error(value):
                errors.append(f"{where}.values: {problem}")
    return errors


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes semantics: every matchLabels pair and every expression must hold."""
    if any(labels.get(key) != value for key, value in selector.match_labels.items()):
        return False
    return all(_requirement_holds(r, labels) for r in selector.match_expressions)


def _requirement_holds(requirement: SelectorRequirement, labels: Mapping[str, str]) -> bool:
    present = requirement.key in labels
    match requirement.operator:
        case SelectorOperator.IN:
            return present and labels[requirement.key] in requirement.values
        case SelectorOperator.NOT_IN:
            return not present or labels[requirement.key] not in requirement.values
        case SelectorOperator.EXISTS:
            return present
        case SelectorOperator.DOES_NOT_EXIST:
            return not present

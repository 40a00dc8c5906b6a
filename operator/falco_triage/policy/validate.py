"""Semantic checks the CRD schema cannot express, with messages a policy author can act on.

Every message starts with the path of the offending field in the policy's YAML (camelCase,
as written), e.g. ``spec.actions[1].isolatePod.allowCidrs[0]: ...``. The operator puts the
messages into the policy's ``Valid`` condition and ignores the policy; ``falco-triage policy
check`` prints them. A policy with any error never takes part in a decision.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from falco_triage.models.common import API_VERSION, Condition, ConditionStatus
from falco_triage.models.policy import (
    ACTION_TYPES,
    ISOLATION_LABEL_PREFIX,
    Action,
    AnnotatePod,
    ClusterMatch,
    ClusterResponsePolicy,
    FieldCondition,
    FieldOperator,
    IsolatePod,
    LabelPod,
    Match,
    Notify,
    ResponsePolicy,
    ScaleWorkload,
)
from falco_triage.models.text import clip
from falco_triage.policy.duration import parse_duration
from falco_triage.policy.labels import is_dns_label, key_error, selector_errors, value_error
from falco_triage.policy.refs import AnyPolicy, policy_name, policy_namespace
from falco_triage.settings import PROTECTED_NAMESPACES

KINDS: dict[str, type[ResponsePolicy] | type[ClusterResponsePolicy]] = {
    "ResponsePolicy": ResponsePolicy,
    "ClusterResponsePolicy": ClusterResponsePolicy,
}
SCALABLE_KINDS = ("Deployment", "StatefulSet")
# Actions that need the pod to still exist; none of them may follow deletePod.
POD_ACTIONS = ("labelPod", "annotatePod", "isolatePod", "scaleWorkload")
# One NetworkPolicy / deletion / scale per alert: a second would collide on the same object.
AT_MOST_ONCE = ("isolatePod", "deletePod", "scaleWorkload")

# Falco field names: ``proc.name``, ``proc.aname[2]``, ``jevt.value[/a/b]``, and the
# undotted names of ``append_output`` extra fields. Anything with spaces, ``%`` or ``=`` is a
# copy-paste from a rule's output format, not a field name.
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*(\[[^\]\s]{1,200}\])?$")
_SOURCE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_GLOB_CHARS = set("*?[")
# Label prefixes Kubernetes components own; app.kubernetes.io is the one meant for users.
_RESERVED_PREFIXES = ("kubernetes.io", "k8s.io")
_USER_PREFIXES = ("app.kubernetes.io",)
_MAX_ANNOTATION_BYTES = 64 * 1024  # far below the API server's 256 KiB for all annotations
_MAX_CONDITION_MESSAGE = 4096
_MAX_ERRORS = 50


@dataclass(frozen=True)
class ParsedPolicy:
    """A policy object as found in the cluster or a file: the model, or why there is none."""

    kind: str
    name: str
    namespace: str | None
    policy: AnyPolicy | None
    errors: tuple[str, ...]

    @property
    def valid(self) -> bool:
        return self.policy is not None and not self.errors

    @property
    def ref(self) -> str:
        if self.kind == "ClusterResponsePolicy":
            return f"ClusterResponsePolicy/{self.name or '?'}"
        return f"{self.kind or 'Policy'}/{self.namespace or '?'}/{self.name or '?'}"


def parse_policy(
    obj: Mapping[str, Any], *, protected_namespaces: Collection[str] = PROTECTED_NAMESPACES
) -> ParsedPolicy:
    """Schema (pydantic) and semantic validation of one policy object; never raises."""
    kind = obj.get("kind")
    metadata = obj.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    name = metadata.get("name") if isinstance(metadata.get("name"), str) else ""
    namespace = metadata.get("namespace") if isinstance(metadata.get("namespace"), str) else None
    kind_text = kind if isinstance(kind, str) else ""
    model = KINDS.get(kind_text)
    if model is None:
        return ParsedPolicy(
            kind_text,
            str(name),
            namespace,
            None,
            (f"kind: expected ResponsePolicy or ClusterResponsePolicy, got {str(kind)[:60]!r}",),
        )
    if obj.get("apiVersion") != API_VERSION:
        error = f"apiVersion: expected {API_VERSION}, got {str(obj.get('apiVersion'))[:60]!r}"
        return ParsedPolicy(kind_text, str(name), namespace, None, (error,))
    try:
        policy = model.model_validate(dict(obj))
    except ValidationError as exc:
        return ParsedPolicy(kind_text, str(name), namespace, None, tuple(schema_errors(exc)))
    errors = validate_policy(policy, protected_namespaces=protected_namespaces)
    return ParsedPolicy(kind_text, str(name), namespace, policy, tuple(errors))


def schema_errors(exc: ValidationError) -> list[str]:
    """Pydantic errors as ``path: message`` lines, paths in the YAML's own spelling."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False)[:_MAX_ERRORS]:
        lines.append(f"{_path(error['loc'])}: {error['msg'].removeprefix('Value error, ')}")
    return lines


def validate_policy(
    policy: AnyPolicy, *, protected_namespaces: Collection[str] = PROTECTED_NAMESPACES
) -> list[str]:
    """Every semantic problem with ``policy``; an empty list means it may take part."""
    protected = set(protected_namespaces)
    errors = _metadata_errors(policy, protected)
    errors += _match_errors(policy.spec.match, "spec.match", protected)
    if policy.spec.ttl is not None:
        errors += _duration_errors(policy.spec.ttl, "spec.ttl")
    if policy.spec.rate_limit is not None:
        errors += _duration_errors(policy.spec.rate_limit.window, "spec.rateLimit.window")
    errors += _actions_errors(policy.spec.actions)
    return errors[:_MAX_ERRORS]


def validity_condition(
    errors: Sequence[str], *, now: datetime, generation: int | None = None
) -> Condition:
    """The ``Valid`` condition for a policy's status (reason ``Invalid`` when it has errors)."""
    if not errors:
        return Condition(
            type="Valid",
            status=ConditionStatus.TRUE,
            reason="Valid",
            message="Policy is valid and takes part in decisions",
            last_transition_time=now,
            observed_generation=generation,
        )
    message = f"Policy is ignored until fixed: {'; '.join(errors)}"
    return Condition(
        type="Valid",
        status=ConditionStatus.FALSE,
        reason="Invalid",
        message=clip(message, _MAX_CONDITION_MESSAGE),
        last_transition_time=now,
        observed_generation=generation,
    )


def _path(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(document)"


def _metadata_errors(policy: AnyPolicy, protected: set[str]) -> list[str]:
    errors = []
    name = policy_name(policy)
    if not name:
        errors.append("metadata.name: required")
    elif not _DNS_SUBDOMAIN.match(name) or len(name) > 253:
        errors.append(f"metadata.name: {name[:80]!r} is not a valid Kubernetes name")
    namespace = policy_namespace(policy)
    if namespace is not None and namespace in protected:
        errors.append(
            f"metadata.namespace: {namespace!r} is a protected namespace; alerts there are "
            "never acted on, so this policy could never do anything"
        )
    return errors


def _match_errors(match: Match, path: str, protected: set[str]) -> list[str]:
    errors: list[str] = []
    if not _has_criteria(match):
        errors.append(
            f"{path}: sets no criteria and would match every alert; set at least one of "
            "rules, minPriority, tags, sources, podSelector, outputFields"
            + (", namespaces, namespaceSelector" if isinstance(match, ClusterMatch) else "")
        )
    for index, rule in enumerate(match.rules):
        errors += _glob_errors(rule, f"{path}.rules[{index}]", "rule name")
    if match.tags is not None:
        if not match.tags.any and not match.tags.all:
            errors.append(f"{path}.tags: set any, all or both")
        for group, tags in (("any", match.tags.any), ("all", match.tags.all)):
            for index, tag in enumerate(tags):
                if not tag.strip():
                    errors.append(f"{path}.tags.{group}[{index}]: empty tag")
    for index, source in enumerate(match.sources):
        if not _SOURCE.match(source):
            errors.append(
                f"{path}.sources[{index}]: {source[:60]!r} is not a Falco source name "
                "(e.g. syscall, k8s_audit, aws_cloudtrail)"
            )
    if match.pod_selector is not None:
        errors += selector_errors(match.pod_selector, f"{path}.podSelector")
    for index, condition in enumerate(match.output_fields):
        errors += _condition_errors(condition, f"{path}.outputFields[{index}]")
    if isinstance(match, ClusterMatch):
        for index, pattern in enumerate(match.namespaces):
            errors += _namespace_pattern_errors(pattern, f"{path}.namespaces[{index}]", protected)
        if match.namespace_selector is not None:
            errors += selector_errors(match.namespace_selector, f"{path}.namespaceSelector")
    return errors


def _has_criteria(match: Match) -> bool:
    criteria: list[object] = [
        match.rules,
        match.min_priority,
        match.tags,
        match.sources,
        match.pod_selector,
        match.output_fields,
    ]
    if isinstance(match, ClusterMatch):
        criteria += [match.namespaces, match.namespace_selector]
    return any(c is not None and c != [] for c in criteria)


def _glob_errors(pattern: str, path: str, what: str) -> list[str]:
    if not pattern.strip():
        return [f"{path}: empty {what}"]
    try:
        re.compile(fnmatch.translate(pattern))
    except re.error as exc:  # pragma: no cover - fnmatch escapes almost everything
        return [f"{path}: glob {pattern[:80]!r} does not compile: {exc}"]
    return []


def _condition_errors(condition: FieldCondition, path: str) -> list[str]:
    errors = []
    field = condition.field
    if field.startswith("%"):
        errors.append(f"{path}.field: write the field name without '%' ({field[1:][:60]!r})")
    elif not _FIELD.match(field):
        errors.append(
            f"{path}.field: {field[:80]!r} does not look like a Falco field name "
            "(e.g. proc.name, fd.name, proc.aname[2])"
        )
    if condition.operator == FieldOperator.IN:
        if not condition.values:
            errors.append(f"{path}.values: operator 'in' needs at least one value")
        if condition.value is not None:
            errors.append(f"{path}.value: operator 'in' takes values (a list), not value")
    else:
        if condition.value is None:
            errors.append(f"{path}.value: operator {condition.operator.value!r} needs value")
        if condition.values:
            errors.append(
                f"{path}.values: operator {condition.operator.value!r} takes value, not values"
            )
        if condition.operator == FieldOperator.GLOB and condition.value is not None:
            errors += _glob_errors(condition.value, f"{path}.value", "glob")
    return errors


def _namespace_pattern_errors(pattern: str, path: str, protected: set[str]) -> list[str]:
    if _GLOB_CHARS & set(pattern):
        return _glob_errors(pattern, path, "namespace pattern")
    if not is_dns_label(pattern):
        return [f"{path}: {pattern[:80]!r} is not a valid namespace name or glob"]
    if pattern in protected:
        return [f"{path}: {pattern!r} is a protected namespace and is never acted on; remove it"]
    return []


def _duration_errors(text: str, path: str) -> list[str]:
    try:
        duration = parse_duration(text)
    except ValueError as exc:
        return [f"{path}: {exc}"]
    if not duration:
        return [f"{path}: must be longer than zero"]
    return []


def _actions_errors(actions: Sequence[Action]) -> list[str]:
    errors: list[str] = []
    for name, count in Counter(a.name for a in actions).items():
        if count > 1:
            errors.append(f"spec.actions: action name {name!r} is used {count} times")
    types: list[str] = []
    for index, action in enumerate(actions):
        path = f"spec.actions[{index}]"
        set_types = action.set_types
        if len(set_types) != 1:
            errors.append(
                f"{path}: set exactly one of {', '.join(ACTION_TYPES)} "
                f"(found {', '.join(set_types) or 'none'})"
            )
            continue
        kind = set_types[0]
        if "deletePod" in types and kind in POD_ACTIONS:
            errors.append(f"{path}: {kind} cannot run after deletePod (the pod is gone)")
        types.append(kind)
        errors += _action_errors(action, f"{path}.{kind}")
    for kind, count in Counter(types).items():
        if kind in AT_MOST_ONCE and count > 1:
            errors.append(f"spec.actions: {kind} may appear at most once (found {count})")
    return errors


def _action_errors(action: Action, path: str) -> list[str]:
    if action.label_pod is not None:
        return _label_pod_errors(action.label_pod, path)
    if action.annotate_pod is not None:
        return _annotate_pod_errors(action.annotate_pod, path)
    if action.isolate_pod is not None:
        return _isolate_pod_errors(action.isolate_pod, path)
    if action.scale_workload is not None:
        return _scale_errors(action.scale_workload, path)
    if action.notify is not None:
        return _notify_errors(action.notify, path)
    return []  # deletePod: every field is bounded by the schema


def _reserved_key_error(key: str) -> str | None:
    prefix = key.rpartition("/")[0]
    reserved = any(prefix == p or prefix.endswith("." + p) for p in _RESERVED_PREFIXES)
    if reserved and prefix not in _USER_PREFIXES:
        return f"key {key[:80]!r} uses a prefix reserved for Kubernetes components"
    if key.startswith(ISOLATION_LABEL_PREFIX):
        return f"key {key[:80]!r} is reserved for isolatePod"
    return None


def _label_pod_errors(action: LabelPod, path: str) -> list[str]:
    errors = []
    for key, value in action.labels.items():
        if problem := key_error(key) or _reserved_key_error(key) or value_error(value):
            errors.append(f"{path}.labels: {problem}")
    return errors


def _annotate_pod_errors(action: AnnotatePod, path: str) -> list[str]:
    errors = []
    for key in action.annotations:
        if problem := key_error(key) or _reserved_key_error(key):
            errors.append(f"{path}.annotations: {problem}")
    size = sum(len(k.encode()) + len(v.encode()) for k, v in action.annotations.items())
    if size > _MAX_ANNOTATION_BYTES:
        errors.append(f"{path}.annotations: {size} bytes in total; keep them under 64 KiB")
    return errors


def _isolate_pod_errors(action: IsolatePod, path: str) -> list[str]:
    errors = []
    if not action.deny_ingress and not action.deny_egress:
        errors.append(f"{path}: denies neither ingress nor egress, so it would isolate nothing")
    for index, cidr in enumerate(action.allow_cidrs):
        if problem := _cidr_error(cidr):
            errors.append(f"{path}.allowCidrs[{index}]: {problem}")
    for index, namespace in enumerate(action.allow_namespaces):
        if not is_dns_label(namespace):
            errors.append(f"{path}.allowNamespaces[{index}]: {namespace[:80]!r} is not a namespace")
    for namespace, count in Counter(action.allow_namespaces).items():
        if count > 1:
            errors.append(f"{path}.allowNamespaces: {namespace!r} is listed {count} times")
    return errors


def _cidr_error(cidr: str) -> str | None:
    if "/" not in cidr:
        return f"{cidr[:60]!r} needs a prefix length (e.g. {cidr[:40]}/32)"
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        return f"{cidr[:60]!r} is not a valid CIDR: {exc}"
    if network.prefixlen == 0:
        return f"{cidr!r} allows every address, which would undo the isolation"
    return None


def _scale_errors(action: ScaleWorkload, path: str) -> list[str]:
    errors = []
    if not action.kinds:
        errors.append(f"{path}.kinds: name at least one of {', '.join(SCALABLE_KINDS)}")
    for index, kind in enumerate(action.kinds):
        if kind not in SCALABLE_KINDS:
            errors.append(
                f"{path}.kinds[{index}]: {kind[:60]!r} cannot be scaled; "
                f"use {' or '.join(SCALABLE_KINDS)}"
            )
    if len(set(action.kinds)) != len(action.kinds):
        errors.append(f"{path}.kinds: lists a kind twice")
    return errors


def _notify_errors(action: Notify, path: str) -> list[str]:
    errors = []
    if not action.event and action.webhook_secret_ref is None:
        errors.append(f"{path}: sends nothing; set event: true or a webhookSecretRef")
    ref = action.webhook_secret_ref
    if ref is not None:
        if not _DNS_SUBDOMAIN.match(ref.name):
            errors.append(f"{path}.webhookSecretRef.name: {ref.name[:80]!r} is not a Secret name")
        if not _SECRET_KEY.match(ref.key):
            errors.append(f"{path}.webhookSecretRef.key: {ref.key[:80]!r} is not a Secret key")
    return errors

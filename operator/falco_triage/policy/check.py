"""``falco-triage policy check FILE [--against EVENT]``: policies validated offline.

For GitOps pipelines: the same schema and semantic checks the operator runs, on the YAML
that is about to be committed or synced, with no cluster. With an event file, it also shows
which policy would win for each event and which actions would run, with the objects in YAML.

The file may hold any number of YAML documents (rendered Kustomize/Helm output included):
documents of other kinds are skipped and listed, ``kind: List`` is unpacked. Exit codes:
0 all policies valid; 1 a policy is invalid or the YAML does not parse; 2 the event file
cannot be used.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from falco_triage.events.fingerprint import alert_name, alert_spec
from falco_triage.events.normalize import load_events
from falco_triage.events.parse import PayloadError
from falco_triage.events.target import alert_namespace
from falco_triage.models.alert import Decision, DecisionOutcome, FalcoAlert, FalcoAlertSpec
from falco_triage.models.policy import ClusterResponsePolicy
from falco_triage.policy.decide import (
    DEFAULT_OPERATOR_NAMESPACE,
    DecisionContext,
    Evaluation,
    decide_from,
    evaluate,
)
from falco_triage.policy.refs import AnyPolicy, policy_ref
from falco_triage.policy.validate import KINDS, ParsedPolicy, parse_policy
from falco_triage.settings import PROTECTED_NAMESPACES

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_BAD_EVENT = 2

# Renders the planned objects for a decision; the CLI passes remediation.preview_yaml.
# (Injected because policy and remediation are independent layers: neither imports the other.)
Preview = Callable[[Decision, FalcoAlert], str]


@dataclass(frozen=True)
class CheckResult:
    output: str
    exit_code: int


def check_policies(
    policy_text: str,
    *,
    source: str = "<policies>",
    event: bytes | None = None,
    event_source: str = "<event>",
    preview: Preview | None = None,
    namespace_labels: Mapping[str, str] | None = None,
    pod_labels: Mapping[str, str] | None = None,
    protected_namespaces: Collection[str] = PROTECTED_NAMESPACES,
    operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE,
) -> CheckResult:
    """Validate every policy in ``policy_text``; with ``event``, show what would happen.

    ``namespace_labels`` / ``pod_labels`` stand in for the cluster's (``None``: unknown, so
    selectors on them do not match). Deterministic: no clock, no I/O.
    """
    protected = set(protected_namespaces) | {operator_namespace}
    lines: list[str] = []
    try:
        documents = list(_documents(policy_text))
    except yaml.YAMLError as exc:
        return CheckResult(f"{source}: not valid YAML: {_one_line(exc)}\n", EXIT_INVALID)
    parsed: list[ParsedPolicy] = []
    for index, doc in documents:
        where = f"{source}: document {index}"
        if not isinstance(doc, Mapping):
            lines.append(f"{where}: invalid: expected a mapping, got {type(doc).__name__}")
            parsed.append(ParsedPolicy("", "", None, None, ("not a mapping",)))
            continue
        if doc.get("kind") not in KINDS:
            lines.append(f"{where}: skipped {_describe(doc)} (not a policy)")
            continue
        result = parse_policy(doc, protected_namespaces=protected)
        parsed.append(result)
        if result.valid:
            lines.append(f"{where}: {result.ref}: valid")
        else:
            lines.append(f"{where}: {result.ref}: invalid")
            lines += [f"  - {error}" for error in result.errors]
    for ref, count in Counter(p.ref for p in parsed if p.policy is not None).items():
        if count > 1:
            lines.append(f"{source}: {ref} is defined {count} times; the last one would win")
    invalid = sum(not p.valid for p in parsed)
    policies = [p.policy for p in parsed if p.policy is not None and p.valid]
    if not parsed:
        lines.append(f"{source}: no ResponsePolicy or ClusterResponsePolicy found")
    lines.append(f"{len(parsed)} policies, {len(policies)} valid, {invalid} invalid")
    exit_code = EXIT_INVALID if invalid or not parsed else EXIT_OK
    if event is not None:
        try:
            events = load_events(event)
        except PayloadError as exc:
            lines.append(f"{event_source}: {exc.message}")
            return CheckResult("\n".join(lines) + "\n", EXIT_BAD_EVENT)
        for number, falco_event in enumerate(events, start=1):
            spec = alert_spec(falco_event, operator_namespace)
            context = DecisionContext(
                now=spec.time,  # no clock: the same files always print the same result
                operator_namespace=operator_namespace,
                protected_namespaces=frozenset(protected_namespaces),
                namespace_labels=namespace_labels,
                pod_labels=pod_labels,
            )
            lines.append("")
            lines += _explain(number, spec, policies, context, preview)
    return CheckResult("\n".join(lines) + "\n", exit_code)


def _explain(
    number: int,
    spec: FalcoAlertSpec,
    policies: list[AnyPolicy],
    context: DecisionContext,
    preview: Preview | None,
) -> list[str]:
    namespace = alert_namespace(spec.target, context.operator_namespace)
    lines = [
        f"event {number}: {spec.priority.value} {spec.rule!r} ({spec.source}) "
        f"on {spec.target.display}"
    ]
    placed = [_place(p, spec.target.namespace) for p in policies]
    assumed = {policy_ref(p) for p, moved in placed if moved}
    evaluations = evaluate(spec, [p for p, _ in placed], context)
    for evaluation in evaluations:
        note = " (namespace assumed from the event)" if evaluation.ref in assumed else ""
        lines.append("  " + _evaluation_line(evaluation, note))
    decision = decide_from(evaluations, spec, context)
    if decision.outcome == DecisionOutcome.NO_MATCH:
        lines.append("  decision: NoMatch: no valid policy matches; nothing would run")
        return lines
    lines.append(f"  decision: {decision.outcome.value}: {decision.reason}")
    if decision.outcome != DecisionOutcome.MATCHED:
        return lines
    mode = decision.mode.value if decision.mode else "?"
    lines.append(f"  mode {mode}; actions in order: {', '.join(decision.actions)}")
    if preview is not None:
        alert = FalcoAlert(metadata={"name": alert_name(spec), "namespace": namespace}, spec=spec)
        lines.append("  planned objects:")
        lines += ["    " + line if line else "" for line in preview(decision, alert).splitlines()]
    return lines


def _place(policy: AnyPolicy, namespace: str | None) -> tuple[AnyPolicy, bool]:
    """A ResponsePolicy without ``metadata.namespace`` (Kustomize sets it at sync time) is
    assumed to live in the event's namespace."""
    if isinstance(policy, ClusterResponsePolicy) or policy.metadata.get("namespace"):
        return policy, False
    if namespace is None:
        return policy, False
    metadata = {**policy.metadata, "namespace": namespace}
    return policy.model_copy(update={"metadata": metadata}), True


def _evaluation_line(evaluation: Evaluation, note: str) -> str:
    ref = evaluation.ref + note
    if evaluation.errors:
        return f"invalid  {ref}"
    if evaluation.matched:
        return f"matches  {ref}"
    assert evaluation.match is not None
    return f"no match {ref}: {evaluation.match.criterion}: {evaluation.match.detail}"


def _documents(text: str) -> Iterator[tuple[int, Any]]:
    """(1-based document index, document), ``kind: List`` items unpacked, empty ones dropped."""
    for index, doc in enumerate(yaml.safe_load_all(text), start=1):
        if doc is None:
            continue
        if isinstance(doc, Mapping) and doc.get("kind") == "List":
            for item in doc.get("items") or []:
                yield index, item
        else:
            yield index, doc


def _describe(doc: Mapping[str, Any]) -> str:
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return f"{str(doc.get('kind'))[:60]}/{str(name)[:60]}"


def _one_line(exc: yaml.YAMLError) -> str:
    return " ".join(str(exc).split())[:500]

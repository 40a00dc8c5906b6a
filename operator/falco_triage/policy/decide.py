"""``decide()``: which one policy, if any, responds to an alert, and why.

Precedence (documented in docs/policies.md): every valid policy is matched against the alert;
of those that match, a namespaced ResponsePolicy beats any ClusterResponsePolicy, then the
higher ``spec.precedence`` wins, then the name in alphabetical order. Exactly one policy
wins and only its actions run; the others are recorded as also-matched.

Safety comes after matching, so the decision can say *which* policy was refused and why:
an alert whose target namespace is protected (kube-system, kube-public, kube-node-lease, the
operator's own, and any configured) or carries the opt-out label is ``Refused`` whatever the
policy says. A winner over its rate limit is ``RateLimited``: nothing runs, and the next
policy in line does *not* step in, because that could run a different, unreviewed response.

Inputs are the alert's ``spec`` (never its analysis), the policies, and facts read from the
cluster (labels, recent responses). The same inputs always give the same Decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from falco_triage.models.alert import Decision, DecisionOutcome, FalcoAlertSpec
from falco_triage.models.text import clip
from falco_triage.policy.duration import parse_duration
from falco_triage.policy.match import MatchResult, match_policy
from falco_triage.policy.refs import AnyPolicy, policy_ref, precedence_key
from falco_triage.policy.validate import validate_policy
from falco_triage.settings import PROTECTED_NAMESPACES, Settings

DEFAULT_OPERATOR_NAMESPACE = "falco-triage"
DEFAULT_OPT_OUT_LABEL = "falcotriage.io/ignore"
_MAX_REASON = 2048
_MAX_SUMMARY = 256
_MAX_ALSO_MATCHED = 32
_MAX_MISSES_EXPLAINED = 5


@dataclass(frozen=True)
class DecisionContext:
    """What ``decide()`` needs besides the alert and the policies.

    ``namespace_labels`` / ``pod_labels`` are ``None`` when not known (no namespace, pod not
    found); selectors on unknown labels never match. ``recent_responses`` maps a policy ref
    (``ResponsePolicy/<ns>/<name>``, ``ClusterResponsePolicy/<name>``) to the times that policy
    won a ``Matched`` decision; only those inside the policy's ``rateLimit.window`` count.
    """

    now: datetime
    operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE
    protected_namespaces: frozenset[str] = frozenset(PROTECTED_NAMESPACES)
    opt_out_label: str = DEFAULT_OPT_OUT_LABEL
    namespace_labels: Mapping[str, str] | None = None
    pod_labels: Mapping[str, str] | None = None
    recent_responses: Mapping[str, Sequence[datetime]] = field(default_factory=dict)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        now: datetime,
        namespace_labels: Mapping[str, str] | None,
        pod_labels: Mapping[str, str] | None,
        recent_responses: Mapping[str, Sequence[datetime]] | None = None,
    ) -> DecisionContext:
        return cls(
            now=now,
            operator_namespace=settings.namespace,
            protected_namespaces=frozenset(settings.operator.protected_namespaces),
            opt_out_label=settings.operator.opt_out_label,
            namespace_labels=namespace_labels,
            pod_labels=pod_labels,
            recent_responses=recent_responses or {},
        )

    @property
    def protected(self) -> frozenset[str]:
        """Protected namespaces, the operator's own always among them."""
        return self.protected_namespaces | {self.operator_namespace}

    def opted_out(self) -> bool:
        """Whether the namespace carries the opt-out label.

        The setting is ``key`` (any value but ``false`` opts out) or ``key=value``. Only the
        *namespace* label counts: a pod label would let anyone who can create pods exempt them.
        """
        labels = self.namespace_labels or {}
        key, equals, value = self.opt_out_label.partition("=")
        if key not in labels:
            return False
        return labels[key] == value if equals else labels[key].lower() != "false"


@dataclass(frozen=True)
class Evaluation:
    """One policy considered for one alert: its validation errors, or its match result."""

    ref: str
    policy: AnyPolicy
    errors: tuple[str, ...]
    match: MatchResult | None

    @property
    def matched(self) -> bool:
        return not self.errors and self.match is not None and self.match.matched


def evaluate(
    spec: FalcoAlertSpec, policies: Iterable[AnyPolicy], context: DecisionContext
) -> list[Evaluation]:
    """Every policy in precedence order, each validated and matched against the alert."""
    results = []
    for policy in sorted(policies, key=precedence_key):
        ref = policy_ref(policy)
        try:
            errors = tuple(validate_policy(policy, protected_namespaces=context.protected))
            match = None
            if not errors:
                match = match_policy(
                    policy,
                    spec,
                    namespace_labels=context.namespace_labels,
                    pod_labels=context.pod_labels,
                )
        except Exception as exc:  # NB: one broken policy must never stop the others
            errors, match = (f"cannot be evaluated: {type(exc).__name__}: {exc}"[:300],), None
        results.append(Evaluation(ref, policy, errors, match))
    return results


def decide(
    spec: FalcoAlertSpec, policies: Iterable[AnyPolicy], context: DecisionContext
) -> Decision:
    """The Decision for an alert: NoMatch, Matched, Refused or RateLimited."""
    return decide_from(evaluate(spec, policies, context), spec, context)


def decide_from(
    evaluations: Sequence[Evaluation], spec: FalcoAlertSpec, context: DecisionContext
) -> Decision:
    """:func:`decide` on evaluations already made (``policy check`` prints them too)."""
    matched = [e for e in evaluations if e.matched]
    invalid = [e.ref for e in evaluations if e.errors]
    notes = [f"Ignored invalid: {', '.join(invalid)}."] if invalid else []
    if not matched:
        return _no_match(evaluations, notes, context)
    winner, others = matched[0], matched[1:]
    policy = winner.policy
    also = [e.ref for e in others]
    won = (
        f"{winner.ref} won"
        + (f" over {', '.join(also)}" if also else "")
        + " (namespaced before cluster, then higher precedence, then name)."
    )
    base = Decision(
        outcome=DecisionOutcome.MATCHED,
        policy=winner.ref,
        policy_generation=_generation(policy.metadata.get("generation")),
        mode=policy.spec.mode,
        also_matched=also[:_MAX_ALSO_MATCHED],
        decided_at=context.now,
    )
    namespace = spec.target.namespace
    if namespace is not None and namespace in context.protected:
        return _with(
            base,
            DecisionOutcome.REFUSED,
            "Refused: protected namespace",
            [won, f"Namespace {namespace!r} is protected: it is never acted on.", *notes],
        )
    if namespace is not None and context.opted_out():
        return _with(
            base,
            DecisionOutcome.REFUSED,
            "Refused: namespace opted out",
            [won, f"Namespace {namespace!r} has opted out ({context.opt_out_label}).", *notes],
        )
    if (limited := _rate_limited(winner, context)) is not None:
        return _with(base, DecisionOutcome.RATE_LIMITED, "Rate limited", [won, limited, *notes])
    names = [a.name for a in policy.spec.actions]
    ttl = policy.spec.ttl
    decision = base.model_copy(
        update={
            "actions": names,
            "action_specs": [a.model_copy(deep=True) for a in policy.spec.actions],
            "ttl_seconds": int(parse_duration(ttl).total_seconds()) if ttl else None,
        }
    )
    mode = policy.spec.mode.value
    return _with(decision, DecisionOutcome.MATCHED, f"{mode}: {', '.join(names)}", [won, *notes])


def _no_match(
    evaluations: Sequence[Evaluation], notes: list[str], context: DecisionContext
) -> Decision:
    misses = [
        f"{e.ref}: {e.match.criterion}: {e.match.detail}"
        for e in evaluations
        if e.match is not None and not e.match.matched
    ]
    shown = misses[:_MAX_MISSES_EXPLAINED]
    if len(misses) > len(shown):
        shown.append(f"(+{len(misses) - len(shown)} more)")
    lines = ["No valid policy matched.", *notes]
    if shown:
        lines.append("Closest: " + "; ".join(shown) + ".")
    return Decision(
        outcome=DecisionOutcome.NO_MATCH,
        summary="No matching policy",
        reason=clip(" ".join(lines), _MAX_REASON),
        decided_at=context.now,
    )


def _rate_limited(winner: Evaluation, context: DecisionContext) -> str | None:
    limit = winner.policy.spec.rate_limit
    if limit is None:
        return None
    window = parse_duration(limit.window)
    since = context.now - window
    recent = [t for t in context.recent_responses.get(winner.ref, ()) if since < t <= context.now]
    if len(recent) < limit.max_actions:
        return None
    return (
        f"Rate limit reached: {len(recent)} responses in the last {limit.window} "
        f"(max {limit.max_actions}); nothing runs and no other policy steps in."
    )


def _with(decision: Decision, outcome: DecisionOutcome, summary: str, lines: list[str]) -> Decision:
    return decision.model_copy(
        update={
            "outcome": outcome,
            "summary": clip(summary, _MAX_SUMMARY),
            "reason": clip(" ".join(lines), _MAX_REASON),
        }
    )


def _generation(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None

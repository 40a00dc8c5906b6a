"""Severity: Falco's priority mapped to a level, adjusted by context, every adjustment explained."""

from __future__ import annotations

from dataclasses import dataclass, field

from falco_triage.models.analysis import Severity, SeverityAdjustment, SeverityLevel
from falco_triage.models.priority import Priority

_LEVELS = [
    SeverityLevel.INFO,
    SeverityLevel.LOW,
    SeverityLevel.MEDIUM,
    SeverityLevel.HIGH,
    SeverityLevel.CRITICAL,
]
_BASE = {
    Priority.EMERGENCY: 4,
    Priority.ALERT: 4,
    Priority.CRITICAL: 4,
    Priority.ERROR: 3,
    Priority.WARNING: 2,
    Priority.NOTICE: 1,
    Priority.INFORMATIONAL: 0,
    Priority.DEBUG: 0,
}
# Tactics where running as root in a container makes the outcome materially worse.
_ROOT_SENSITIVE = {"TA0002", "TA0003", "TA0004", "TA0006"}


@dataclass(frozen=True)
class SeverityContext:
    in_container: bool
    privileged: bool | None
    uid: str | None
    tactic_ids: frozenset[str]
    production_namespace: bool = False
    production_reason: str = ""
    extra: list[SeverityAdjustment] = field(default_factory=list)


def assess(priority: Priority, ctx: SeverityContext) -> Severity:
    base = _BASE[priority]
    adjustments: list[SeverityAdjustment] = []
    if ctx.in_container and ctx.privileged:
        adjustments.append(
            SeverityAdjustment(
                delta=1,
                reason="The container is privileged (container.privileged=true): "
                "escaping to the node is trivial from here.",
            )
        )
    if ctx.in_container and ctx.uid == "0" and ctx.tactic_ids & _ROOT_SENSITIVE:
        adjustments.append(
            SeverityAdjustment(
                delta=1,
                reason="The process runs as root (user.uid=0) in the container, and the rule's "
                "tactics (execution, persistence, privilege escalation or credential access) "
                "are worse with root.",
            )
        )
    if ctx.production_namespace:
        adjustments.append(SeverityAdjustment(delta=1, reason=ctx.production_reason))
    adjustments.extend(ctx.extra)
    score = max(0, min(4, base + sum(a.delta for a in adjustments)))
    return Severity(
        level=_LEVELS[score], base_level=_LEVELS[base], score=score, adjustments=adjustments
    )

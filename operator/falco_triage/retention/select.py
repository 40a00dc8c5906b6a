"""Retention policy: expire alerts not seen for a while, and cap each namespace.

Deleting a FalcoAlert also rolls back what was done for it (owned objects are garbage-collected,
the finalizer undoes patches), so alerts whose remediation is already rolled back or resolved
are the first to go when a namespace is over its cap; among equals the least recently seen go
first. The per-namespace cap keeps list/watch cost and etcd size flat however noisy Falco is.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

# Deletion order when a namespace is over its cap: remediation already undone first, then
# alerts where nothing was done, and alerts with a response in force or pending last.
_RANK = {"RolledBack": 0, "Resolved": 0, "NoAction": 1, "Analyzed": 1, "DryRun": 1, "Failed": 1}
_ACTIVE = 2


@dataclass(frozen=True)
class AlertSummary:
    namespace: str
    name: str
    uid: str
    resource_version: str
    last_seen: datetime
    phase: str


def select_for_deletion(
    alerts: list[AlertSummary], now: datetime, max_age: timedelta, max_per_namespace: int
) -> list[tuple[AlertSummary, str]]:
    """Alerts to delete with the reason for each, in a deterministic order."""
    chosen: dict[tuple[str, str], str] = {}
    for alert in alerts:
        if now - alert.last_seen > max_age:
            seen = f"{alert.last_seen:%Y-%m-%dT%H:%M:%SZ}"
            chosen[(alert.namespace, alert.name)] = (
                f"not seen for more than {_human(max_age)} (last seen {seen})"
            )
    by_namespace: dict[str, list[AlertSummary]] = defaultdict(list)
    for alert in alerts:
        if (alert.namespace, alert.name) not in chosen:
            by_namespace[alert.namespace].append(alert)
    for namespace, kept in by_namespace.items():
        excess = len(kept) - max_per_namespace
        if excess <= 0:
            continue
        ordered = sorted(kept, key=lambda a: (_RANK.get(a.phase, _ACTIVE), a.last_seen, a.name))
        for alert in ordered[:excess]:
            chosen[(namespace, alert.name)] = (
                f"namespace {namespace} holds more than {max_per_namespace} alerts"
            )
    index = {(a.namespace, a.name): a for a in alerts}
    return [(index[key], chosen[key]) for key in sorted(chosen)]


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"

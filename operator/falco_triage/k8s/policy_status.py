"""The counters in a response policy's status: alerts it won, and actions it applied.

Read-modify-write with optimistic concurrency: the merge patch carries the resourceVersion the
new counts were computed from, so two writers never lose each other's increments (one gets a
409, reads again and recomputes). Counters are an operational summary, not an audit trail:
the FalcoAlerts hold the authoritative record of every decision and action.
"""

from __future__ import annotations

from dataclasses import dataclass

from falco_triage.k8s.errors import Conflict, NotFound
from falco_triage.k8s.rest import RestClient, resource_for
from falco_triage.k8s.status import FIELD_MANAGER
from falco_triage.models.common import API_VERSION

_ROUNDS = 16  # writers racing on one policy each lose at most once per winner


@dataclass(frozen=True)
class PolicyName:
    """A policy as decisions name it.

    ``ResponsePolicy/<namespace>/<name>`` or ``ClusterResponsePolicy/<name>``.
    """

    kind: str
    namespace: str | None
    name: str

    @classmethod
    def parse(cls, ref: str) -> PolicyName | None:
        parts = ref.split("/")
        if len(parts) == 3 and parts[0] == "ResponsePolicy":
            return cls(parts[0], parts[1], parts[2])
        if len(parts) == 2 and parts[0] == "ClusterResponsePolicy":
            return cls(parts[0], None, parts[1])
        return None


def add_to_counters(
    rest: RestClient, policy: PolicyName, *, matched: int = 0, actions: int = 0
) -> bool:
    """Add to ``status.matchedAlerts`` / ``status.actionsTaken``; False if the policy is gone."""
    if not matched and not actions:
        return True
    resource = resource_for(API_VERSION, policy.kind)
    for _ in range(_ROUNDS):
        try:
            current = rest.get(resource.path(policy.namespace, policy.name))
        except NotFound:
            return False
        status = current.get("status") or {}
        body = {
            "metadata": {"resourceVersion": (current.get("metadata") or {}).get("resourceVersion")},
            "status": {
                "matchedAlerts": int(status.get("matchedAlerts") or 0) + matched,
                "actionsTaken": int(status.get("actionsTaken") or 0) + actions,
            },
        }
        try:
            rest.merge_patch(
                resource.path(policy.namespace, policy.name, "status"),
                body,
                field_manager=FIELD_MANAGER,
            )
            return True
        except Conflict:
            continue
        except NotFound:
            return False
    raise Conflict(f"{policy.kind} {policy.name}: counters not updated after {_ROUNDS} conflicts")

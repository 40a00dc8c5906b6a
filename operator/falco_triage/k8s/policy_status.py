"""The counters in a response policy's status: alerts it won, and actions it applied.

Read-modify-write with optimistic concurrency: the merge patch carries the resourceVersion the
new counts were computed from, so two writers never lose each other's increments (one gets a
409, reads again and recomputes). Counters are an operational summary, not an audit trail:
the FalcoAlerts hold the authoritative record of every decision and action.

Counting is idempotent per alert, so that the responder can count an alert *before* writing
its phase: the same patch that adds to a counter appends a key naming what it counted to
``status.recentlyCounted`` (``<alert uid>`` for ``matchedAlerts``, ``<alert uid>/actions`` for
``actionsTaken``), and a key already in the list is not counted again. A re-run after a crash
between the count and the phase write (the alert not settled yet, so it is picked up again)
finds its keys there and adds nothing. The list keeps the newest
:data:`~falco_triage.models.policy.MAX_RECENTLY_COUNTED` keys: it only has to remember the
alerts counted but not settled yet (see that constant for why the bound suffices).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from falco_triage.k8s.errors import Conflict, NotFound
from falco_triage.k8s.rest import RestClient, resource_for
from falco_triage.k8s.status import FIELD_MANAGER
from falco_triage.models.common import API_VERSION
from falco_triage.models.policy import MAX_RECENTLY_COUNTED

_ROUNDS = 16  # writers racing on one policy each lose at most once per winner
ACTIONS_SUFFIX = "/actions"


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


@dataclass(frozen=True)
class Tally:
    """One alert's share of a policy's counters, each part counted at most once.

    ``matched``: count the alert in ``matchedAlerts``. ``actions``: count this many applied
    actions in ``actionsTaken`` (0 counts too: it settles the alert's share, so that a re-run
    that sees a different result does not add to it); None leaves ``actionsTaken`` to a later
    tally (a RequireApproval alert is matched when it starts waiting, acts once approved).
    """

    uid: str
    matched: bool = False
    actions: int | None = None

    def __post_init__(self) -> None:
        if not self.uid:
            raise ValueError("a tally needs the alert's uid")
        if self.actions is not None and self.actions < 0:
            raise ValueError(f"actions must be 0 or more, not {self.actions}")

    def parts(self) -> list[tuple[str, str, int]]:
        """``(key, counter, increment)`` for each part this tally counts."""
        parts: list[tuple[str, str, int]] = []
        if self.matched:
            parts.append((self.uid, "matchedAlerts", 1))
        if self.actions is not None:
            parts.append((self.uid + ACTIONS_SUFFIX, "actionsTaken", self.actions))
        return parts


def counted_status(status: Mapping[str, Any], tally: Tally) -> dict[str, Any] | None:
    """The status fields after counting ``tally``; None when every part is already counted.

    Parts whose key is in ``recentlyCounted`` are left out; the keys of the others are appended
    (newest last) and the oldest dropped beyond :data:`MAX_RECENTLY_COUNTED`.
    """
    recent = [str(k) for k in status.get("recentlyCounted") or []]
    seen = set(recent)
    counts = {
        "matchedAlerts": int(status.get("matchedAlerts") or 0),
        "actionsTaken": int(status.get("actionsTaken") or 0),
    }
    added: list[str] = []
    for key, counter, increment in tally.parts():
        if key in seen:
            continue
        counts[counter] += increment
        added.append(key)
    if not added:
        return None
    return {**counts, "recentlyCounted": (recent + added)[-MAX_RECENTLY_COUNTED:]}


def count_alert(rest: RestClient, policy: PolicyName, tally: Tally) -> bool:
    """Add ``tally`` to the policy's counters unless already counted; False if it is gone."""
    if not tally.parts():
        return True
    resource = resource_for(API_VERSION, policy.kind)
    for _ in range(_ROUNDS):
        try:
            current = rest.get(resource.path(policy.namespace, policy.name))
        except NotFound:
            return False
        counted = counted_status(current.get("status") or {}, tally)
        if counted is None:
            return True
        body = {
            "metadata": {"resourceVersion": (current.get("metadata") or {}).get("resourceVersion")},
            "status": counted,
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

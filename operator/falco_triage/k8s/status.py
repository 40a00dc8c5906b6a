"""Status writes to our custom resources that never lose another writer's change.

Several writers share one status: the receivers count ``occurrences``, the operator publishes
the analysis and its conditions, and people or other controllers add conditions of their own.
A JSON merge patch replaces a list as a whole, so ``status.conditions`` computed from an object
read earlier would drop a condition someone added since. :func:`update_status` therefore reads
the object, computes the new status from exactly what it read, and sends the merge patch with
that ``resourceVersion``: the API server applies it only if nobody wrote in between, and
answers 409 otherwise, when we read again and recompute (bounded, with a jittered backoff).

Only the fields the caller returns are written; everything else in the status (the receivers'
``occurrences`` above all) is left as the other writers have it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from falco_triage.k8s.errors import Conflict
from falco_triage.k8s.rest import Resource, RestClient
from falco_triage.models.common import GROUP, VERSION

FIELD_MANAGER = "falco-triage-operator"

StatusChange = Callable[[Mapping[str, Any]], Mapping[str, Any] | None]
"""Given the object as read, the status fields to merge into it (None: nothing to write)."""

# NB: each round loses only to a write that landed between our read and our patch. A FalcoAlert
# the receivers are counting into is written as fast as they can; this many rounds, with the
# backoff below, ride that out, and a caller that still gets Conflict retries later (kopf).
ROUNDS = 20
# Jitter bound of round n (seconds): 5 ms doubling per round, at most 250 ms, so writers that
# collided do not collide again in lockstep (client-go's retry.RetryOnConflict does the same).
_BACKOFF_BASE = 0.005
_BACKOFF_MAX = 0.25


def update_status(
    rest: RestClient,
    plural: str,
    namespace: str | None,
    name: str,
    change: StatusChange,
    *,
    known: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge ``change(object)`` into the object's status, conditional on what was read.

    Namespaced, or cluster-scoped when ``namespace`` is None. ``known`` is the object as the
    caller last saw it (kopf's body), which saves the first read; if it is stale the first
    patch meets a 409 and the object is read again. Returns the object as stored afterwards (as
    read, when ``change`` has nothing to write).

    Raises :class:`~falco_triage.k8s.errors.NotFound` when the object is gone,
    :class:`~falco_triage.k8s.errors.Conflict` after :data:`ROUNDS` lost races, and the other
    :mod:`~falco_triage.k8s.errors` classes as they come.
    """
    resource = Resource(GROUP, VERSION, plural)
    current: Mapping[str, Any] | None = known
    for attempt in range(ROUNDS):
        if current is None or not _version(current):
            current = rest.get(resource.path(namespace, name))
        status = change(current)
        if status is None:
            return dict(current)
        # NB: resourceVersion in a merge patch is a precondition: 409 unless it is still current.
        body = {"metadata": {"resourceVersion": _version(current)}, "status": dict(status)}
        try:
            return rest.merge_patch(
                resource.path(namespace, name, "status"), body, field_manager=FIELD_MANAGER
            )
        except Conflict:
            current = None  # someone wrote in between: read what they wrote and recompute
            _pause(attempt)
    where = f"{namespace}/{name}" if namespace else name
    raise Conflict(f"{plural} {where}: status not written after {ROUNDS} conflicting writes")


def _version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _pause(attempt: int) -> None:
    bound = min(_BACKOFF_BASE * 2**attempt, _BACKOFF_MAX)
    time.sleep(random.uniform(0, bound))  # noqa: S311  # jitter, not cryptography

"""Test hook, never for deployments: pause a response at a named step boundary.

The crash tests (``tests/integration/test_response_crash.py``) set ``FALCO_TRIAGE_TEST_PAUSE_AT``
so that the operator stops at a known point of an Enforce response and can be SIGKILLed there;
a second operator must then finish the response exactly once. The value is a comma-separated
list of points, each optionally limited to one FalcoAlert by name: ``applied:2`` pauses every
alert after the operations of its second step, ``applied:2@shell`` only the alert ``shell``.

Points, in the order a response reaches them (N counts the policy's actions from 1):

- ``decided``: ``status.decision`` is written; nothing is planned, recorded or applied.
- ``started:N``: step N's start record (Planned, ``startedAt``, rollback facts) is written;
  nothing of it is sent yet (not even the finalizer of a reversible step).
- ``applied:N``: step N's operations were sent (the cluster has its objects, labels and
  Events); its result is not recorded yet. The dangerous window: a re-run must not act twice.
- ``recorded:N``: step N's result is written. Not for the last step, whose record goes out
  with the phase, in one write (``before-phase`` is the point just before that write).
- ``before-phase``: every step has run; the policy's counters are not updated and the phase
  (and the last record) is not written yet.
- ``counted``: the policy's counters include the alert; the phase (and the last record) is not
  written yet. A re-run must not count it again.
- ``settled``: the phase is written; the response is over.

The variable is read once, when this module is imported. Unset (always, in a deployment),
:data:`PAUSE` is None and the responder's ``if testhook.PAUSE is not None`` guards are all the
hook costs. Only the environment selects a point: nothing in an alert, a policy or an event
can reach it. A malformed value stops the operator at start-up rather than being ignored.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

ENV = "FALCO_TRIAGE_TEST_PAUSE_AT"
# Long enough that the test kills the operator first; short enough that a forgotten one ends.
PAUSE_SECONDS = 3600.0
_POINT = re.compile(
    r"(decided|before-phase|counted|settled|(started|applied|recorded):[1-9][0-9]?)"
)


@dataclass(frozen=True)
class PausePoints:
    """Where to pause: ``(point, alert name)``, the name None for every alert."""

    points: frozenset[tuple[str, str | None]]

    @classmethod
    def parse(cls, text: str) -> PausePoints:
        points: set[tuple[str, str | None]] = set()
        for entry in text.split(","):
            point, at, alert = entry.strip().partition("@")
            if not _POINT.fullmatch(point) or (at and not alert):
                raise ValueError(
                    f"{ENV}: {entry.strip()!r} is not a pause point (decided, started:N, "
                    "applied:N, recorded:N, before-phase, counted or settled, optionally "
                    "@<alert name>)"
                )
            points.add((point, alert or None))
        return cls(frozenset(points))

    def wanted(self, point: str, alert_name: str) -> bool:
        return (point, None) in self.points or (point, alert_name) in self.points

    async def reached(self, point: str, namespace: str, name: str) -> None:
        """Sleep for an hour if ``point`` is wanted for this alert (the test kills us)."""
        if not self.wanted(point, name):
            return
        log.warning("%s: FalcoAlert %s/%s paused at %s", ENV, namespace, name, point)
        await asyncio.sleep(PAUSE_SECONDS)


def from_environment(environ: Mapping[str, str] = os.environ) -> PausePoints | None:
    text = environ.get(ENV)
    return PausePoints.parse(text) if text else None


PAUSE = from_environment()

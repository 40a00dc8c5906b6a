"""Matched decisions per policy, for rate limits: read once at start-up, then kept current from
the FalcoAlert watch.

NB: deliberately not a kopf index. kopf holds back every handler until each object of an
indexed resource has been indexed, and tracks that with one readiness toggle per object whose
creation wakes every waiting worker: quadratic in the number of alerts. With 10,000 FalcoAlerts
the operator spent many minutes of CPU before its first analysis. One paged LIST at start-up
(before kopf starts watching, so before any handler runs) gives the same guarantee — no
decision is made before every earlier one is known — in seconds.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import kopf

from falco_triage.k8s.client import api_client
from falco_triage.k8s.errors import ApiError
from falco_triage.k8s.sweep import list_alerts
from falco_triage.models.alert import PLURAL
from falco_triage.models.common import GROUP, VERSION

log = logging.getLogger(__name__)

# Seconds before a failed start-up LIST is tried again (kopf retries the activity).
_LOAD_RETRY = 5.0


class MatchedDecisions(Mapping[str, Sequence[tuple[str, str]]]):
    """Policy ref → ``(alert uid, decidedAt)`` of every alert with a ``Matched`` decision.

    Written from the event loop (watch events), read from the responder's worker threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_uid: dict[str, tuple[str, str]] = {}
        self._by_policy: dict[str, dict[str, str]] = {}

    def observe(self, uid: str, status: Mapping[str, Any]) -> None:
        """Record what one alert's status says now (a Matched decision, or none)."""
        decision = status.get("decision") or {}
        policy, decided = decision.get("policy"), decision.get("decidedAt")
        matched = decision.get("outcome") == "Matched" and policy and decided
        with self._lock:
            self._drop(uid)
            if matched and isinstance(policy, str) and isinstance(decided, str):
                self._by_uid[uid] = (policy, decided)
                self._by_policy.setdefault(policy, {})[uid] = decided

    @property
    def total(self) -> int:
        with self._lock:
            return len(self._by_uid)

    def forget(self, uid: str) -> None:
        with self._lock:
            self._drop(uid)

    def _drop(self, uid: str) -> None:
        old = self._by_uid.pop(uid, None)
        if old is None:
            return
        entries = self._by_policy.get(old[0], {})
        entries.pop(uid, None)
        if not entries:
            self._by_policy.pop(old[0], None)

    def __getitem__(self, policy: str) -> Sequence[tuple[str, str]]:
        with self._lock:
            return list(self._by_policy[policy].items())

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._by_policy))

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_policy)


MATCHED = MatchedDecisions()


def load(decisions: MatchedDecisions) -> int:
    """Every alert's decision, page by page; returns how many alerts were read. Blocking."""
    count = 0
    for item in list_alerts(api_client()):
        uid = (item.get("metadata") or {}).get("uid")
        if isinstance(uid, str):
            decisions.observe(uid, item.get("status") or {})
            count += 1
    return count


@kopf.on.startup()
async def load_matched_decisions(**_: Any) -> None:
    try:
        count = await asyncio.to_thread(load, MATCHED)
    except ApiError as exc:
        raise kopf.TemporaryError(f"listing FalcoAlerts: {exc.message}", delay=_LOAD_RETRY) from exc
    log.info("Rate limits: %d matched decisions among %d alerts", MATCHED.total, count)


class _QuietTracking(logging.Filter):
    """Drops kopf's "Handler 'track_matched_decisions' succeeded." line: it would be logged
    for every change of every alert."""

    _LINE = "Handler 'track_matched_decisions' succeeded."

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != self._LINE


logging.getLogger("kopf.objects").addFilter(_QuietTracking())


@kopf.on.event(GROUP, VERSION, PLURAL)
def track_matched_decisions(type: str | None, status: kopf.Status, uid: str, **_: Any) -> None:
    if type == "DELETED":
        MATCHED.forget(uid)
    else:
        MATCHED.observe(uid, status)

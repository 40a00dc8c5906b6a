"""Admit the events of one request into the write queue, all or nothing.

Every event is checked first; only if all are valid does any reach the queue, so a rejected
request changes nothing. Repeats of content seen before take the fast path
(:mod:`falco_triage.events.repeats`); the rest are normalized, targeted and fingerprinted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from falco_triage.events.fingerprint import fingerprint
from falco_triage.events.normalize import normalize_event
from falco_triage.events.parse import Limits, PayloadError
from falco_triage.events.repeats import Known, Repeat, RepeatCache
from falco_triage.events.target import resolve_target
from falco_triage.ingest.queue import Offer, PendingAlert, WriteQueue


class Admission(NamedTuple):
    """What happened to a request's events: all ``accepted`` minus those ``shed`` at once.

    (A NamedTuple: one is made per request, and a frozen dataclass costs twice as much.)
    """

    accepted: int
    aggregated: int
    shed: int


class Intake:
    """Checks a request's events, then puts them in the write queue (single-threaded)."""

    def __init__(
        self,
        queue: WriteQueue,
        limits: Limits,
        *,
        default_namespace: str,
        window_seconds: int,
        repeat_cache: int = 4096,
    ) -> None:
        self._queue = queue
        self._limits = limits
        self._namespace = default_namespace
        self._window = window_seconds
        self._repeats = RepeatCache(repeat_cache)

    def check(self, raws: list[dict[str, Any]]) -> list[Repeat]:
        """Validate every event; :class:`PayloadError` naming the first bad one."""
        checked: list[Repeat] = []
        for index, raw in enumerate(raws):
            hit = self._repeats.match(raw)
            if hit is None:
                hit = self._learn(raw, index)
            checked.append(hit)
        return checked

    def admit(self, checked: list[Repeat]) -> Admission:
        """Queue checked events; returns how many were new, merged into waiting alerts, shed."""
        aggregated = shed = 0
        bump, window = self._queue.bump, self._window
        for hit in checked:
            key = hit.known.key(hit.time, window)
            if bump(key, hit.time):
                aggregated += 1
                continue
            outcome = self._queue.offer(self._pending(hit, key))
            if outcome is Offer.AGGREGATED:
                aggregated += 1
            elif outcome is Offer.SHED:
                shed += 1
        return Admission(len(checked) - shed, aggregated, shed)

    def _learn(self, raw: Mapping[str, Any], index: int) -> Repeat:
        try:
            event = normalize_event(raw, self._limits)
        except PayloadError as exc:
            raise PayloadError(exc.code, f"event {index}: {exc.message}", exc.status) from None
        target = resolve_target(event, self._namespace)
        known = self._repeats.remember(
            raw, event, target, fingerprint(event, target), self._namespace
        )
        return Repeat(known, event.time, event.uuid, None, first=event)

    def _pending(self, hit: Repeat, key: tuple[str, str]) -> PendingAlert:
        known: Known = hit.known
        event = hit.event()
        return PendingAlert(
            key=key,
            event=event,
            target=known.target,
            fingerprint=known.fingerprint,
            count=1,
            first_seen=hit.time,
            last_seen=hit.time,
            rank=event.priority.rank,
        )

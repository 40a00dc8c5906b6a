"""Workers that turn waiting alerts into FalcoAlert writes, at a bounded rate, losing nothing.

Each worker takes the most severe waiting alert, writes it through :class:`AlertStore` in a
thread (the kubernetes client blocks), and on failure puts it back: repeats that arrived
meanwhile merge into it, so a long outage costs buffer slots per *alert*, not per event. After
a failure every worker pauses (exponential backoff, or the server's Retry-After) so a down API
server sees a trickle of probes, not a storm.

Only a write the API server rejects for good (the object is invalid: a bug, not a condition)
is dropped, and it is counted and logged. A missing or terminating namespace sends the alert to
the operator's namespace instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from falco_triage.events.fingerprint import build_spec
from falco_triage.ingest.metrics import Metrics
from falco_triage.ingest.queue import AlertKey, PendingAlert, WriteQueue
from falco_triage.k8s.alerts import (
    Delta,
    Doubt,
    NamespaceUnavailable,
    Recorded,
    Stored,
    WriteUnknown,
)
from falco_triage.k8s.errors import ApiError, Invalid, Transient
from falco_triage.models.alert import FalcoAlertSpec

log = logging.getLogger(__name__)

_BACKOFF_FIRST = 0.25
_KNOWN_MAX = 20_000  # alerts whose resourceVersion we remember, to patch without a read
_LEFTOVER_LINES = 20  # at shutdown, name this many unwritten alerts, then summarize
# A namespace found missing (or terminating) is not tried again for this long: alerts for it go
# straight to the operator's namespace, saving a failed create per write.
_GONE_SECONDS = 60.0
_GONE_MAX = 1024


class Recorder(Protocol):
    """What the writer needs of :class:`~falco_triage.k8s.alerts.AlertStore` (fakes in tests)."""

    def record(
        self,
        namespace: str,
        name: str,
        spec: Callable[[], FalcoAlertSpec],
        delta: Delta,
        *,
        known: Stored | None = None,
        doubt: Doubt | None = None,
    ) -> Recorded: ...


@dataclass(frozen=True, slots=True)
class WriterConfig:
    default_namespace: str
    workers: int = 4
    backoff_max: float = 5.0


class AlertWriter:
    """Drains a :class:`WriteQueue` into the Kubernetes API."""

    def __init__(
        self, queue: WriteQueue, store: Recorder, metrics: Metrics, config: WriterConfig
    ) -> None:
        self._queue = queue
        self._store = store
        self._metrics = metrics
        self._config = config
        self._executor = ThreadPoolExecutor(
            max_workers=config.workers, thread_name_prefix="falco-triage-write"
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._writing: dict[AlertKey, PendingAlert] = {}
        self._known: dict[AlertKey, Stored] = {}
        self._gone: dict[str, float] = {}  # namespace -> until when it counts as missing
        self._pause_until = 0.0
        self._failures = 0

    @property
    def running(self) -> bool:
        return any(not task.done() for task in self._tasks)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._work(), name=f"falco-triage-writer-{i}")
            for i in range(self._config.workers)
        ]

    async def stop(self, flush_seconds: float) -> int:
        """Write what is waiting for up to ``flush_seconds``, then stop; returns events left
        unwritten (each logged and counted as dropped with reason ``shutdown``)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.wait_idle(), timeout=flush_seconds)
        # NB: a cancelled worker's thread may still finish its request; its entry is reported
        # as unwritten here although it may land, the one case where we over-report loss.
        writing = list(self._writing.values())
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        leftovers = self._queue.drain() + writing
        self._executor.shutdown(wait=False, cancel_futures=True)
        return self._report_leftovers(leftovers)

    async def _work(self) -> None:
        while True:
            entry = await self._queue.take()
            key = entry.key
            self._writing[key] = entry
            try:
                await self._pause()
                await self._write(entry)
            finally:
                self._writing.pop(key, None)
                self._queue.release(key)

    async def _pause(self) -> None:
        delay = self._pause_until - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _write(self, entry: PendingAlert) -> None:
        namespace, name = entry.key
        if self._gone.get(namespace, 0.0) > time.monotonic():
            # Known to be missing a moment ago: skip the failing create, go straight to ours.
            self._retarget(entry, None)
            return
        delta = Delta(entry.count, entry.first_seen, entry.last_seen)
        doubt = entry.doubt if isinstance(entry.doubt, Doubt) else None
        event, target, fingerprint = entry.event, entry.target, entry.fingerprint
        known = self._known.get(entry.key)

        def spec() -> FalcoAlertSpec:  # built only if the alert has to be created
            return build_spec(event, target, fingerprint)

        def record() -> Recorded:
            return self._store.record(namespace, name, spec, delta, known=known, doubt=doubt)

        loop = asyncio.get_running_loop()
        try:
            recorded = await loop.run_in_executor(self._executor, record)
        except WriteUnknown as exc:
            entry.doubt = exc.doubt
            self._retry(entry, exc)
        except NamespaceUnavailable as exc:
            self._known.pop(entry.key, None)
            self._retarget(entry, exc)
        except Invalid as exc:
            self._known.pop(entry.key, None)
            self._drop(entry, "invalid", exc.message)
        except ApiError as exc:
            self._known.pop(entry.key, None)
            entry.doubt = doubt
            self._retry(entry, exc)
        except Exception as exc:  # a bug must not lose acknowledged events: keep retrying
            log.exception("unexpected error writing FalcoAlert %s/%s", namespace, name)
            self._known.pop(entry.key, None)
            self._retry(entry, exc)
        else:
            self._remember(entry.key, recorded.stored)
            self._metrics.events_written.inc(entry.count)
            if recorded.created:
                self._metrics.alerts_created.inc()
            self._failures = 0

    def _retry(self, entry: PendingAlert, exc: BaseException) -> None:
        entry.failures += 1
        self._failures += 1
        delay = min(_BACKOFF_FIRST * 2 ** (self._failures - 1), self._config.backoff_max)
        if isinstance(exc, Transient) and exc.retry_after:
            delay = max(delay, min(exc.retry_after, self._config.backoff_max * 4))
        self._pause_until = max(self._pause_until, time.monotonic() + delay)
        level = (
            logging.WARNING
            if entry.failures in (1, 10) or entry.failures % 100 == 0
            else logging.DEBUG
        )
        log.log(
            level,
            "writing FalcoAlert %s/%s failed (attempt %d, %d events kept for retry in %.2fs): %s",
            *entry.key,
            entry.failures,
            entry.count,
            delay,
            exc,
        )
        self._queue.requeue(entry)

    def _retarget(self, entry: PendingAlert, exc: ApiError | None) -> None:
        namespace, name = entry.key
        fallback = self._config.default_namespace
        if namespace == fallback and exc is not None:
            self._retry(entry, exc)  # our own namespace missing: an install problem, keep trying
            return
        if exc is not None:
            now = time.monotonic()
            if len(self._gone) >= _GONE_MAX:  # bounded: forget the expired ones
                self._gone = {ns: until for ns, until in self._gone.items() if until > now}
            self._gone[namespace] = now + _GONE_SECONDS
            log.warning(
                "namespace %s unavailable (%s); writing FalcoAlert %s to %s instead",
                namespace,
                exc.message,
                name,
                fallback,
            )
        entry.key = (fallback, name)
        entry.doubt = None
        self._queue.requeue(entry)

    def _drop(self, entry: PendingAlert, reason: str, message: str) -> None:
        self._metrics.events_dropped.labels(reason).inc(entry.count)
        log.error(
            "dropping %d events of rule %r for %s/%s: the API server rejected the object: %s",
            entry.count,
            entry.event.rule,
            *entry.key,
            message,
        )

    def _remember(self, key: AlertKey, stored: Stored) -> None:
        self._known.pop(key, None)
        if len(self._known) >= _KNOWN_MAX:
            del self._known[next(iter(self._known))]
        self._known[key] = stored

    def _report_leftovers(self, leftovers: list[PendingAlert]) -> int:
        total = sum(entry.count for entry in leftovers)
        if not leftovers:
            log.info("write queue flushed; nothing left unwritten")
            return 0
        self._metrics.events_dropped.labels("shutdown").inc(total)
        leftovers.sort(key=lambda e: (-e.rank, -e.count))
        for entry in leftovers[:_LEFTOVER_LINES]:
            log.error(
                "unwritten at shutdown: %d events of rule %r (%s) for FalcoAlert %s/%s",
                entry.count,
                entry.event.rule,
                entry.event.priority.value,
                *entry.key,
            )
        by_priority = Tally[str]()
        for entry in leftovers:
            by_priority[entry.event.priority.value] += entry.count
        log.error(
            "shutdown left %d events in %d alerts unwritten (by priority: %s)",
            total,
            len(leftovers),
            dict(by_priority),
        )
        return total

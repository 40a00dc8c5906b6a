"""Prometheus metrics of the receiver, on a registry of its own.

A registry per receiver (not the process-global one) lets two receivers share a process, as the
tests and ``falco-triage run`` do, without "duplicated timeseries" errors.

Every event that enters is accounted for exactly once among: rejected (with its request),
accepted (acknowledged); and every accepted event ends as written, shed (buffer full, by
priority), dropped (the API refused the object for good, or shutdown), or still queued.

The counts every accepted request adds to (requests with 200, events received, accepted,
aggregated) are kept as plain integers in :class:`Tally` and added to their counters by
:meth:`Metrics.flush`: before every scrape of ``/metrics`` (so what Prometheus reads is exact)
and once a second. Four locked counter updates per request cost more CPU than a small
request's own parsing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_PREFIX = "falco_triage_ingest"

# Ack latency buckets: the target is a p99 under 20 ms; finer steps below that, a few above.
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


@dataclass(slots=True)
class Tally:
    """Counts of accepted requests not yet in their counters; event loop only, no lock."""

    ok_requests: int = 0
    received: int = 0
    accepted: int = 0
    aggregated: int = 0


class Metrics:
    """All receiver metrics; ``registry`` is what ``GET /metrics`` serves."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.tally = Tally()
        r = self.registry
        self.requests = Counter(
            f"{_PREFIX}_requests",
            "Requests to POST /v1/events by HTTP status",
            ["code"],
            registry=r,
        )
        self.requests_rejected = Counter(
            f"{_PREFIX}_requests_rejected",
            "Requests refused, by reason (unauthorized, body_too_large, invalid_json, ...)",
            ["reason"],
            registry=r,
        )
        self.events_received = Counter(
            f"{_PREFIX}_events_received", "Events found in request bodies that parsed", registry=r
        )
        self.events_accepted = Counter(
            f"{_PREFIX}_events_accepted",
            "Events acknowledged and handed to the write pipeline",
            registry=r,
        )
        self.events_rejected = Counter(
            f"{_PREFIX}_events_rejected",
            "Events refused with their request, by reason",
            ["reason"],
            registry=r,
        )
        self.events_aggregated = Counter(
            f"{_PREFIX}_events_aggregated",
            "Accepted events merged into an alert already waiting to be written",
            registry=r,
        )
        self.events_shed = Counter(
            f"{_PREFIX}_events_shed",
            "Events dropped because the write buffer was full, by priority (lowest shed first)",
            ["priority"],
            registry=r,
        )
        self.events_dropped = Counter(
            f"{_PREFIX}_events_dropped",
            "Accepted events that could not be written, by reason (invalid, shutdown)",
            ["reason"],
            registry=r,
        )
        self.events_written = Counter(
            f"{_PREFIX}_events_written",
            "Events counted into FalcoAlert status.occurrences",
            registry=r,
        )
        self.alerts_created = Counter(
            f"{_PREFIX}_alerts_created", "FalcoAlerts created", registry=r
        )
        self.api_requests = Counter(
            f"{_PREFIX}_api_requests",
            "Kubernetes API requests (every one passes the rate limiter), by operation",
            ["operation"],
            registry=r,
        )
        self.api_errors = Counter(
            f"{_PREFIX}_api_errors",
            "Failed Kubernetes API requests, by operation and reason",
            ["operation", "reason"],
            registry=r,
        )
        self.request_duration = Histogram(
            f"{_PREFIX}_request_duration_seconds",
            "Time from request start to acknowledgement for POST /v1/events",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            f"{_PREFIX}_queue_depth", "Distinct alerts waiting to be written", registry=r
        )
        self.queue_events = Gauge(
            f"{_PREFIX}_queue_events", "Events in the alerts waiting to be written", registry=r
        )
        self.queue_capacity = Gauge(
            f"{_PREFIX}_queue_capacity", "Distinct alerts the write buffer holds", registry=r
        )

    def flush(self) -> None:
        """Add :attr:`tally` to the counters (from the event loop: before a scrape, each
        second, at shutdown)."""
        tally = self.tally
        for counter, count in (
            (self.requests.labels("200"), tally.ok_requests),
            (self.events_received, tally.received),
            (self.events_accepted, tally.accepted),
            (self.events_aggregated, tally.aggregated),
        ):
            if count:
                counter.inc(count)
        tally.ok_requests = tally.received = tally.accepted = tally.aggregated = 0

    def observe_api(self, operation: str, error: str | None) -> None:
        """Record one API request; thread-safe (called from the writer threads)."""
        self.api_requests.labels(operation).inc()
        if error is not None:
            self.api_errors.labels(operation, error).inc()

    def watch_queue(
        self, depth: Callable[[], float], events: Callable[[], float], capacity: int
    ) -> None:
        """Read the queue's size at scrape time instead of updating gauges on every event."""
        self.queue_depth.set_function(depth)
        self.queue_events.set_function(events)
        self.queue_capacity.set(capacity)

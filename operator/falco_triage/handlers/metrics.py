"""The operator's Prometheus registry, served by `falco-triage run` on `operator.metricsPort`."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server


def registry() -> CollectorRegistry:
    return REGISTRY


def serve(port: int) -> None:
    """Expose /metrics in a daemon thread; 0 disables it."""
    if port:
        start_http_server(port, registry=REGISTRY)

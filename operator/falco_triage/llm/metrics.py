"""Prometheus metrics of the narrative step (``falco_triage_llm_*``).

Pass the registry the operator serves; the default is a private one so that several services
(tests, a CLI run) can coexist in one process without "duplicated timeseries" errors.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Enum, Histogram

from falco_triage.llm.breaker import BreakerState

_PREFIX = "falco_triage_llm"
# Local models answer in seconds to minutes; hosted ones in one to twenty seconds.
_LATENCY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


class LlmMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.calls = Counter(
            f"{_PREFIX}_calls",
            "Narrations requested, by outcome (ok, fallback, disabled, budget, breakerOpen, error)",
            ["backend", "outcome"],
            registry=r,
        )
        self.failures = Counter(
            f"{_PREFIX}_failures",
            "Narrations without a model answer, by reason (timeout, rate_limited, server_error, "
            "invalid_answer, breaker_open, budget, ...)",
            ["backend", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            f"{_PREFIX}_latency_seconds",
            "Time from sending a narration request to its answer, retries included",
            ["backend"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            f"{_PREFIX}_tokens",
            "Tokens reported by the backend, by kind (prompt, completion)",
            ["backend", "kind"],
            registry=r,
        )
        self.cache_hits = Counter(
            f"{_PREFIX}_cache_hits", "Narrations served from the cache", ["backend"], registry=r
        )
        self.breaker = Enum(
            f"{_PREFIX}_breaker_state",
            "Circuit breaker state per backend",
            ["backend"],
            states=[s.value for s in BreakerState],
            registry=r,
        )

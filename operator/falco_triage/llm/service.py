"""``NarrativeService.narrate``: ask the model for a narrative, or say plainly why not.

The deterministic analysis is done before this runs and stays the report of record: this
service only returns a :class:`NarrativeStatus`, never touches the analysis, and never raises
for backend problems. In order, a narration is: disabled → cached → held by the circuit
breaker → over the hourly budget → waiting for a concurrency slot → one model request (with
retries on 429/5xx/timeouts) → validation → at most one repair request → stored or fallen back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType

import httpx

from falco_triage.llm.answer import AnswerError, parse_answer
from falco_triage.llm.backends import Backend, Completion, make_backend
from falco_triage.llm.breaker import BreakerState, CircuitBreaker
from falco_triage.llm.budget import HourlyBudget
from falco_triage.llm.cache import CacheKey, NarrativeCache
from falco_triage.llm.errors import BackendError, FailureReason
from falco_triage.llm.metrics import LlmMetrics
from falco_triage.llm.prompt import (
    ANSWER_SCHEMA,
    PROMPT_VERSION,
    build_prompt,
    new_marker,
    repair_messages,
)
from falco_triage.llm.transport import Transport
from falco_triage.llm_settings import LlmSettings
from falco_triage.models.analysis import Analysis
from falco_triage.models.common import now
from falco_triage.models.event import FalcoEvent
from falco_triage.models.narrative import (
    MAX_REASON,
    Narrative,
    NarrativeOutcome,
    NarrativeStatus,
)
from falco_triage.models.text import clip

log = logging.getLogger(__name__)


class _Busy(Exception):
    """No concurrency slot came free before the narration's deadline."""


class _InvalidAnswer(Exception):
    def __init__(self, problems: str) -> None:
        super().__init__(problems)
        self.problems = problems


@dataclass
class _Usage:
    """What one narration cost, summed over its requests."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    started: float | None = None
    requests: int = field(default=0)

    def add(self, completion: Completion) -> None:
        self.requests += 1
        if completion.prompt_tokens is not None:
            self.prompt_tokens = (self.prompt_tokens or 0) + completion.prompt_tokens
        if completion.completion_tokens is not None:
            self.completion_tokens = (self.completion_tokens or 0) + completion.completion_tokens

    def latency_ms(self) -> int | None:
        if self.started is None:
            return None
        return round((time.perf_counter() - self.started) * 1000)


class NarrativeService:
    """One configured backend with its cache, breaker, budget, concurrency cap and metrics."""

    def __init__(
        self,
        settings: LlmSettings,
        *,
        metrics: LlmMetrics | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        marker_factory: Callable[[], str] = new_marker,
    ) -> None:
        self._settings = settings
        self._name = settings.backend
        self.metrics = metrics or LlmMetrics()
        self.metrics.breaker.labels(self._name).state(BreakerState.CLOSED.value)
        self._breaker = CircuitBreaker(
            settings.breaker_failures,
            settings.breaker_reset_seconds,
            clock=clock,
            on_change=lambda state: self.metrics.breaker.labels(self._name).state(state.value),
        )
        self._budget = HourlyBudget(settings.queries_per_hour, clock=clock)
        self._cache = NarrativeCache(settings.cache_size)
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._marker_factory = marker_factory
        self._owns_client = client is None
        self._client: httpx.AsyncClient | None = None
        self._backend: Backend | None = None
        if settings.enabled:
            # Read once at start: a missing key file stops the process with a clear message.
            api_key = settings.read_api_key()
            self._client = client or httpx.AsyncClient(
                timeout=httpx.Timeout(settings.timeout_seconds),
                limits=httpx.Limits(max_connections=settings.concurrency),
                follow_redirects=False,  # a redirect would carry the key to another host
            )
            transport = Transport(self._client, settings, api_key, sleep=sleep)
            self._backend = make_backend(transport, settings)

    @property
    def breaker_state(self) -> BreakerState:
        return self._breaker.state

    async def __aenter__(self) -> NarrativeService:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._client is not None and self._owns_client:
            await self._client.aclose()

    async def narrate(
        self, analysis: Analysis, event: FalcoEvent, fingerprint: str
    ) -> NarrativeStatus:
        """A narrative for this alert, or a status saying why there is none. Never raises
        for backend problems (cancellation still propagates)."""
        if self._backend is None:
            return self._finish(NarrativeOutcome.DISABLED, reason="disabled: llm.enabled is false")
        key = CacheKey(fingerprint, self._settings.model, PROMPT_VERSION)
        if (cached := self._cache.get(key)) is not None:
            self.metrics.cache_hits.labels(self._name).inc()
            return self._finish(NarrativeOutcome.OK, narrative=cached, cache_hit=True)
        ticket = self._breaker.allow()
        if ticket is None:
            return self._fail(
                NarrativeOutcome.BREAKER_OPEN,
                FailureReason.BREAKER_OPEN,
                f"the backend failed {self._settings.breaker_failures} narrations in a row or "
                f"asked to back off; next try in {self._breaker.retry_in():.0f}s",
            )
        if not self._budget.try_spend():
            self._breaker.release(ticket)
            return self._fail(
                NarrativeOutcome.BUDGET,
                FailureReason.BUDGET,
                f"{self._settings.queries_per_hour} queries per hour spent; next in "
                f"{self._budget.next_in():.0f}s",
            )
        usage = _Usage()
        try:
            narrative, repaired = await self._within_deadline(self._backend, analysis, event, usage)
        except asyncio.CancelledError:
            self._breaker.release(ticket)
            raise
        except _Busy:
            self._budget.refund()
            self._breaker.release(ticket)
            return self._fail(
                NarrativeOutcome.ERROR,
                FailureReason.BUSY,
                f"no free slot (concurrency {self._settings.concurrency}) within "
                f"{self._settings.queue_timeout_seconds:g}s",
            )
        except BackendError as exc:
            # A Retry-After we would not wait out pauses the backend for exactly that long.
            hold = exc.retry_after
            if hold is not None and hold <= self._settings.max_retry_wait_seconds:
                hold = None
            self._breaker.failure(ticket, hold_seconds=hold)
            attempts = f" after {exc.attempts} attempts" if exc.attempts > 1 else ""
            return self._fail(
                NarrativeOutcome.ERROR, exc.reason, f"{exc.message}{attempts}", usage=usage
            )
        except _InvalidAnswer as exc:
            self._breaker.success(ticket)  # it answered: the backend is up, the answer was bad
            return self._fail(
                NarrativeOutcome.FALLBACK,
                FailureReason.INVALID_ANSWER,
                f"{exc.problems} (also after one repair request); the deterministic report stands",
                usage=usage,
            )
        except TimeoutError:
            self._breaker.failure(ticket)
            return self._fail(
                NarrativeOutcome.ERROR,
                FailureReason.DEADLINE,
                f"no answer within {self._settings.total_timeout_seconds:g}s in total",
                usage=usage,
            )
        except Exception as exc:
            # A bug here must not cost the alert its deterministic report: record and go on.
            log.exception("Narrative for %s failed unexpectedly", fingerprint[:12])
            self._breaker.release(ticket)
            return self._fail(
                NarrativeOutcome.ERROR, FailureReason.INTERNAL, type(exc).__name__, usage=usage
            )
        self._breaker.success(ticket)
        self._cache.put(key, narrative)
        reason = f"repaired: the first answer was invalid ({repaired})" if repaired else ""
        return self._finish(NarrativeOutcome.OK, narrative=narrative, reason=reason, usage=usage)

    async def _within_deadline(
        self, backend: Backend, analysis: Analysis, event: FalcoEvent, usage: _Usage
    ) -> tuple[Narrative, str | None]:
        try:
            async with asyncio.timeout(self._settings.queue_timeout_seconds):
                await self._slots.acquire()
        except TimeoutError:
            raise _Busy from None
        try:
            async with asyncio.timeout(self._settings.total_timeout_seconds):
                usage.started = time.perf_counter()
                return await self._generate(backend, analysis, event, usage)
        finally:
            self._slots.release()

    async def _generate(
        self, backend: Backend, analysis: Analysis, event: FalcoEvent, usage: _Usage
    ) -> tuple[Narrative, str | None]:
        """The validated answer, and what was wrong with the first one if it needed repair."""
        prompt = build_prompt(analysis, event, marker_factory=self._marker_factory)
        first = await backend.complete(prompt.messages, ANSWER_SCHEMA)
        usage.add(first)
        try:
            return parse_answer(first.text), None
        except AnswerError as exc:
            problems = _problems(exc, first)
        log.info("Model answer invalid (%s); asking once for a repaired one", problems)
        retry = repair_messages(prompt, first.text or "", problems)
        second = await backend.complete(retry, ANSWER_SCHEMA)
        usage.add(second)
        try:
            return parse_answer(second.text), problems
        except AnswerError as exc:
            raise _InvalidAnswer(_problems(exc, second)) from None

    def _fail(
        self,
        outcome: NarrativeOutcome,
        reason: FailureReason,
        message: str,
        *,
        usage: _Usage | None = None,
    ) -> NarrativeStatus:
        self.metrics.failures.labels(self._name, reason.value).inc()
        log.warning("No model narrative (%s): %s", reason.value, message)
        return self._finish(outcome, reason=f"{reason.value}: {message}", usage=usage)

    def _finish(
        self,
        outcome: NarrativeOutcome,
        *,
        reason: str = "",
        narrative: Narrative | None = None,
        cache_hit: bool = False,
        usage: _Usage | None = None,
    ) -> NarrativeStatus:
        self.metrics.calls.labels(self._name, outcome.value).inc()
        latency = usage.latency_ms() if usage else None
        if latency is not None:
            self.metrics.latency.labels(self._name).observe(latency / 1000)
        if usage is not None:
            for kind, count in (
                ("prompt", usage.prompt_tokens),
                ("completion", usage.completion_tokens),
            ):
                if count:
                    self.metrics.tokens.labels(self._name, kind).inc(count)
        return NarrativeStatus(
            backend=self._name,
            model=clip(self._settings.model, 256),
            prompt_version=PROMPT_VERSION,
            latency_ms=latency,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            cache_hit=cache_hit,
            outcome=outcome,
            reason=clip(reason, MAX_REASON),
            narrative=narrative,
            generated_at=now(),
        )


def _problems(exc: AnswerError, completion: Completion) -> str:
    if completion.truncated:
        return f"the reply was cut off at the token limit; {exc.problems}"
    return exc.problems

"""The circuit breaker stops calling a failing backend and recovers: against a local server that
fails, it opens after the configured number of failed narrations in a row (later narrations
are answered "breakerOpen" without a request), lets one probe through after the reset time,
closes when the probe succeeds and reopens when it fails; its state is a metric. Also the
breaker, LRU cache and hourly budget on their own, with a hand-moved clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client import generate_latest

from falco_triage.analysis import analyze
from falco_triage.llm import NarrativeService
from falco_triage.llm.breaker import BreakerState, CircuitBreaker
from falco_triage.llm.budget import HourlyBudget
from falco_triage.llm.cache import CacheKey, NarrativeCache
from falco_triage.models.analysis import Analysis
from falco_triage.models.event import FalcoEvent
from falco_triage.models.narrative import Narrative, NarrativeOutcome
from tests.support.fake_llm import (
    FakeLlm,
    ManualClock,
    RecordingSleep,
    answer,
    error,
    settings_for,
    text,
)
from tests.unit.factories import make_event


def _alert() -> tuple[Analysis, FalcoEvent]:
    event = make_event("Terminal shell in container")
    return analyze(event), event


@pytest.fixture
async def llm() -> AsyncIterator[FakeLlm]:
    async with FakeLlm("openai") as server:
        yield server


def _state_metric(service: NarrativeService) -> str:
    text = generate_latest(service.metrics.registry).decode()
    return next(
        line.split('state="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("falco_triage_llm_breaker_state{") and line.endswith(" 1.0")
    )


async def test_breaker_opens_after_repeated_failures_and_recovers(llm: FakeLlm) -> None:
    llm.default = error(500)
    clock = ManualClock()
    settings = settings_for(llm, max_attempts=1, breaker_failures=3, breaker_reset_seconds=60)
    async with NarrativeService(settings, clock=clock, sleep=RecordingSleep()) as service:
        failed = [await service.narrate(*_alert(), f"{i}" * 64) for i in range(3)]
        assert service.breaker_state is BreakerState.OPEN
        assert _state_metric(service) == "open"

        held = await service.narrate(*_alert(), "7" * 64)
        assert held.outcome is NarrativeOutcome.BREAKER_OPEN
        assert held.reason == (
            "breaker_open: the backend failed 3 narrations in a row or asked to back off; "
            "next try in 60s"
        )
        assert len(llm.requests) == 3  # held back: no request

        clock.advance(61)
        assert service.breaker_state is BreakerState.HALF_OPEN
        llm.default = answer()
        probe = await service.narrate(*_alert(), "8" * 64)
        assert probe.outcome is NarrativeOutcome.OK
        assert service.breaker_state is BreakerState.CLOSED
        assert _state_metric(service) == "closed"
        metrics = generate_latest(service.metrics.registry).decode()

    assert all(s.outcome is NarrativeOutcome.ERROR for s in failed)
    assert 'falco_triage_llm_failures_total{backend="openai",reason="server_error"} 3.0' in metrics
    assert 'falco_triage_llm_failures_total{backend="openai",reason="breaker_open"} 1.0' in metrics


async def test_a_failed_probe_reopens_the_breaker(llm: FakeLlm) -> None:
    llm.default = error(503)
    clock = ManualClock()
    settings = settings_for(llm, max_attempts=1, breaker_failures=2, breaker_reset_seconds=30)
    async with NarrativeService(settings, clock=clock, sleep=RecordingSleep()) as service:
        for i in range(2):
            await service.narrate(*_alert(), f"{i}" * 64)
        clock.advance(31)
        probe = await service.narrate(*_alert(), "5" * 64)
        after = await service.narrate(*_alert(), "6" * 64)

    assert probe.outcome is NarrativeOutcome.ERROR
    assert after.outcome is NarrativeOutcome.BREAKER_OPEN
    assert service.breaker_state is BreakerState.OPEN
    assert len(llm.requests) == 3


async def test_invalid_answers_do_not_open_the_breaker(llm: FakeLlm) -> None:
    # A backend that answers badly is up; the breaker is about reachability, not quality.
    llm.default = text("not json")
    settings = settings_for(llm, breaker_failures=1)
    async with NarrativeService(settings, sleep=RecordingSleep()) as service:
        statuses = [await service.narrate(*_alert(), f"{i}" * 64) for i in range(2)]

    assert [s.outcome for s in statuses] == [NarrativeOutcome.FALLBACK] * 2
    assert service.breaker_state is BreakerState.CLOSED


def test_breaker_allows_one_probe_at_a_time_and_an_abandoned_probe_expires() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(1, 10, clock=clock)
    breaker.failure(breaker.allow() or pytest.fail("closed breaker refused"))
    assert breaker.allow() is None
    clock.advance(10)
    probe = breaker.allow()
    assert probe is not None
    assert probe.probe
    assert breaker.allow() is None  # one probe at a time
    clock.advance(10)  # the probe never reported (its task was cancelled)
    second = breaker.allow()
    assert second is not None
    breaker.success(second)
    assert breaker.state is BreakerState.CLOSED


def test_breaker_hold_from_retry_after_outlasts_the_reset_time() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(5, 10, clock=clock)
    ticket = breaker.allow()
    assert ticket is not None
    breaker.failure(ticket, hold_seconds=120)
    assert breaker.retry_in() == 120
    clock.advance(119)
    assert breaker.allow() is None
    clock.advance(1)
    assert breaker.allow() is not None


def test_released_ticket_frees_the_probe_slot() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(1, 10, clock=clock)
    breaker.failure(breaker.allow() or pytest.fail("closed breaker refused"))
    clock.advance(10)
    probe = breaker.allow()
    assert probe is not None
    breaker.release(probe)
    assert breaker.allow() is not None


def test_cache_evicts_least_recently_used() -> None:
    cache = NarrativeCache(2)
    narrative = Narrative(summary="s", hypothesis="h", confidence="low")
    keys = [CacheKey(c * 64, "m", "1") for c in "abc"]
    cache.put(keys[0], narrative)
    cache.put(keys[1], narrative)
    assert cache.get(keys[0]) is narrative  # a is now the most recent
    cache.put(keys[2], narrative)
    assert cache.get(keys[1]) is None
    assert cache.get(keys[0]) is narrative
    assert len(cache) == 2
    disabled = NarrativeCache(0)
    disabled.put(keys[0], narrative)
    assert disabled.get(keys[0]) is None


def test_budget_is_a_rolling_hour() -> None:
    clock = ManualClock()
    budget = HourlyBudget(2, clock=clock)
    assert budget.try_spend()
    clock.advance(1800)
    assert budget.try_spend()
    assert not budget.try_spend()
    assert budget.next_in() == 1800
    clock.advance(1800)
    assert budget.remaining() == 1
    assert budget.try_spend()
    budget.refund()
    assert budget.remaining() == 1

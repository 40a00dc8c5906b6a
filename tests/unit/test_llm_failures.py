"""Backend and answer failures never cost the alert its deterministic report, and each is
recorded with a reason: malformed JSON gets exactly one repair request, then a fallback;
timeouts, 429 and 5xx are retried with backoff (exactly Retry-After when sent, a too-long one
pauses the backend instead); other errors are not retried; oversize or non-JSON responses,
refused connections, a full concurrency cap, the hourly budget and the overall deadline each
end in a status, not an exception."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from prometheus_client import generate_latest

from falco_triage.analysis import analyze
from falco_triage.llm import NarrativeService
from falco_triage.llm.breaker import BreakerState
from falco_triage.models.analysis import Analysis
from falco_triage.models.event import FalcoEvent
from falco_triage.models.narrative import NarrativeOutcome
from tests.support.fake_llm import (
    FakeLlm,
    ManualClock,
    RecordingSleep,
    Reply,
    answer,
    error,
    settings_for,
    slow,
    text,
)
from tests.unit.factories import make_event

FP = "e" * 64


def _alert() -> tuple[Analysis, FalcoEvent]:
    event = make_event("Terminal shell in container", **{"proc.cmdline": "bash -i"})
    return analyze(event), event


@pytest.fixture
async def llm() -> AsyncIterator[FakeLlm]:
    async with FakeLlm("openai") as server:
        yield server


async def test_malformed_answer_is_repaired_once(llm: FakeLlm) -> None:
    llm.script(text("Sure! Here is the JSON: {summary: oops"), answer())
    async with NarrativeService(settings_for(llm), sleep=RecordingSleep()) as service:
        status = await service.narrate(*_alert(), FP)

    assert status.outcome is NarrativeOutcome.OK
    assert status.reason.startswith("repaired: the first answer was invalid (")
    assert len(llm.requests) == 2
    first, repair = llm.requests
    assert [m["role"] for m in repair.messages] == ["system", "user", "assistant", "user"]
    assert repair.messages[:2] == first.messages  # same data, same marker
    assert repair.messages[2]["content"] == "Sure! Here is the JSON: {summary: oops"
    assert "not valid JSON" in repair.messages[3]["content"]
    assert (status.prompt_tokens, status.completion_tokens) == (642, 108)


async def test_answer_invalid_after_repair_falls_back_with_the_reason(llm: FakeLlm) -> None:
    llm.script(text("{not json"), text('{"summary": "only this"}'))
    async with NarrativeService(settings_for(llm), sleep=RecordingSleep()) as service:
        status = await service.narrate(*_alert(), FP)
        again = await service.narrate(*_alert(), FP)
        metrics = generate_latest(service.metrics.registry).decode()

    assert status.outcome is NarrativeOutcome.FALLBACK
    assert status.narrative is None
    assert status.reason.startswith("invalid_answer: hypothesis: Field required")
    assert "confidence: Field required" in status.reason
    assert status.reason.endswith("the deterministic report stands")
    assert again.cache_hit is False  # fallbacks are not cached
    assert len(llm.requests) == 2 + 1
    assert 'reason="invalid_answer"} 1.0' in metrics


async def test_validation_problems_name_fields_not_values(llm: FakeLlm) -> None:
    secret_ish = "ZZ-attacker-text-ZZ"
    llm.script(text(f'{{"confidence": "{secret_ish}"}}'), answer())
    async with NarrativeService(settings_for(llm), sleep=RecordingSleep()) as service:
        status = await service.narrate(*_alert(), FP)

    assert "confidence: Input should be 'low', 'medium' or 'high'" in status.reason
    assert secret_ish not in status.reason
    assert secret_ish not in llm.requests[1].messages[3]["content"]


async def test_timeouts_are_retried_then_recorded(llm: FakeLlm) -> None:
    llm.default = slow(30)
    sleep = RecordingSleep()
    settings = settings_for(llm, timeout_seconds=0.2, max_attempts=2)
    async with NarrativeService(settings, sleep=sleep) as service:
        status = await service.narrate(*_alert(), FP)

    assert status.outcome is NarrativeOutcome.ERROR
    assert status.reason == "timeout: no answer within 0.2s after 2 attempts"
    assert len(llm.requests) == 2
    assert len(sleep.delays) == 1


async def test_a_timeout_then_an_answer_succeeds(llm: FakeLlm) -> None:
    llm.script(slow(30), answer())
    settings = settings_for(llm, timeout_seconds=0.2, max_attempts=2)
    async with NarrativeService(settings, sleep=RecordingSleep()) as service:
        status = await service.narrate(*_alert(), FP)

    assert status.outcome is NarrativeOutcome.OK
    assert len(llm.requests) == 2


def _in_seconds(seconds: int) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)


@pytest.mark.parametrize(
    ("header", "low", "high"),
    [(lambda: "7", 7.0, 7.0), (lambda: _in_seconds(20), 10.0, 20.0)],
    ids=["seconds", "http-date"],
)
async def test_429_waits_exactly_retry_after(
    llm: FakeLlm, header: Callable[[], str], low: float, high: float
) -> None:
    # The date form is computed when the test runs; its whole seconds make the wait up to 1 s
    # shorter, and a slow machine may take a few more before the header is read.
    llm.script(error(429, retry_after=header()), answer())
    sleep = RecordingSleep()
    async with NarrativeService(settings_for(llm, backoff_seconds=0.01), sleep=sleep) as service:
        status = await service.narrate(*_alert(), FP)

    assert status.outcome is NarrativeOutcome.OK
    [delay] = sleep.delays
    assert low <= delay <= high  # the server's wait, not our 10 ms backoff


async def test_retry_after_longer_than_we_wait_pauses_the_backend(llm: FakeLlm) -> None:
    llm.script(error(429, retry_after="600"))
    clock, sleep = ManualClock(), RecordingSleep()
    settings = settings_for(llm, max_retry_wait_seconds=30, breaker_reset_seconds=60)
    async with NarrativeService(settings, sleep=sleep, clock=clock) as service:
        status = await service.narrate(*_alert(), FP)
        held = await service.narrate(*_alert(), "f" * 64)
        clock.advance(599)
        still = await service.narrate(*_alert(), "f" * 64)
        clock.advance(2)
        after = await service.narrate(*_alert(), "f" * 64)

    assert status.outcome is NarrativeOutcome.ERROR
    assert status.reason == "rate_limited: HTTP 429 (rate limited)"
    assert sleep.delays == []
    assert held.outcome is still.outcome is NarrativeOutcome.BREAKER_OPEN
    assert after.outcome is NarrativeOutcome.OK
    assert len(llm.requests) == 2


async def test_rate_limits_we_wait_out_count_as_one_failure(llm: FakeLlm) -> None:
    llm.default = error(429, retry_after="2")
    sleep = RecordingSleep()
    settings = settings_for(llm, max_attempts=2, breaker_failures=3)
    async with NarrativeService(settings, sleep=sleep) as service:
        status = await service.narrate(*_alert(), FP)

    assert status.reason == "rate_limited: HTTP 429 (rate limited) after 2 attempts"
    assert sleep.delays == [2.0]
    assert service.breaker_state is BreakerState.CLOSED


async def test_500_then_answer_succeeds(llm: FakeLlm) -> None:
    llm.script(error(500), error(502), answer())
    sleep = RecordingSleep()
    async with NarrativeService(settings_for(llm), sleep=sleep) as service:
        status = await service.narrate(*_alert(), FP)

    assert status.outcome is NarrativeOutcome.OK
    assert len(llm.requests) == 3
    assert len(sleep.delays) == 2


@pytest.mark.parametrize("code", [401, 403, 404])
async def test_client_errors_are_not_retried(llm: FakeLlm, code: int) -> None:
    llm.script(error(code))
    sleep = RecordingSleep()
    async with NarrativeService(settings_for(llm), sleep=sleep) as service:
        status = await service.narrate(*_alert(), FP)

    assert status.outcome is NarrativeOutcome.ERROR
    assert status.reason == f"client_error: HTTP {code}"
    assert len(llm.requests) == 1
    assert sleep.delays == []


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(raw=b"<html>502 Bad Gateway</html>"), "bad_response: the response is not JSON"),
        (Reply(raw=b'{"choices": []}'), "bad_response: the response has no choices"),
        (Reply(raw=b"x" * 20_000), "too_large: response larger than 8192 bytes"),
    ],
    ids=["html", "no-choices", "too-large"],
)
async def test_unusable_responses_are_recorded(llm: FakeLlm, reply: Reply, reason: str) -> None:
    llm.script(reply)
    async with NarrativeService(
        settings_for(llm, max_response_bytes=8192), sleep=RecordingSleep()
    ) as service:
        status = await service.narrate(*_alert(), FP)

    assert status.outcome is NarrativeOutcome.ERROR
    assert status.reason == reason


async def test_refused_connection_is_recorded() -> None:
    async with FakeLlm("openai") as llm:
        settings = settings_for(llm)
    # The server is gone; its port now refuses connections.
    async with NarrativeService(settings, sleep=RecordingSleep()) as service:
        status = await service.narrate(*_alert(), FP)

    assert status.outcome is NarrativeOutcome.ERROR
    assert status.reason.startswith("connection: ConnectError")


async def test_concurrency_cap_bounds_requests_in_flight(llm: FakeLlm) -> None:
    llm.gate = asyncio.Event()
    async with NarrativeService(
        settings_for(llm, concurrency=2), sleep=RecordingSleep()
    ) as service:
        narrations = [asyncio.create_task(service.narrate(*_alert(), c * 64)) for c in "1234"]
        await llm.wait_for_requests(2)
        llm.gate.set()
        statuses = await asyncio.gather(*narrations)

    assert all(s.outcome is NarrativeOutcome.OK for s in statuses)
    assert len(llm.requests) == 4
    assert llm.max_in_flight == 2


async def test_no_free_slot_within_the_queue_timeout_is_busy(llm: FakeLlm) -> None:
    llm.gate = asyncio.Event()
    settings = settings_for(llm, concurrency=1, queue_timeout_seconds=0.2)
    async with NarrativeService(settings, sleep=RecordingSleep()) as service:
        holder = asyncio.create_task(service.narrate(*_alert(), "1" * 64))
        await llm.wait_for_requests(1)
        waiter = await service.narrate(*_alert(), "2" * 64)
        llm.gate.set()
        held = await holder

    assert waiter.outcome is NarrativeOutcome.ERROR
    assert waiter.reason == "busy: no free slot (concurrency 1) within 0.2s"
    assert held.outcome is NarrativeOutcome.OK
    assert len(llm.requests) == 1  # the waiting narration never reached the server


async def test_overall_deadline_bounds_a_narration(llm: FakeLlm) -> None:
    llm.default = slow(30)
    settings = settings_for(llm, timeout_seconds=5, total_timeout_seconds=0.3)
    async with NarrativeService(settings, sleep=RecordingSleep()) as service:
        status = await service.narrate(*_alert(), FP)

    assert status.outcome is NarrativeOutcome.ERROR
    assert status.reason == "deadline: no answer within 0.3s in total"


async def test_hourly_budget_caps_queries(llm: FakeLlm) -> None:
    clock = ManualClock()
    settings = settings_for(llm, queries_per_hour=2)
    async with NarrativeService(settings, sleep=RecordingSleep(), clock=clock) as service:
        spent = [await service.narrate(*_alert(), c * 64) for c in "12"]
        cached = await service.narrate(*_alert(), "1" * 64)
        over = await service.narrate(*_alert(), "3" * 64)
        clock.advance(3600)
        later = await service.narrate(*_alert(), "3" * 64)

    assert all(s.outcome is NarrativeOutcome.OK for s in spent)
    assert cached.cache_hit is True  # cache hits cost nothing
    assert over.outcome is NarrativeOutcome.BUDGET
    assert over.reason == "budget: 2 queries per hour spent; next in 3600s"
    assert later.outcome is NarrativeOutcome.OK
    assert len(llm.requests) == 3
    assert service.breaker_state is BreakerState.CLOSED

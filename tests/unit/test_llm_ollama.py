"""Against a local Ollama-native server: the request goes to /api/chat with the answer schema as
``format``, ``options.num_ctx`` (why the native API is supported at all), ``num_predict`` and
temperature, no streaming; token counts come from Ollama's eval counts; an Ollama too old for
schemas gets ``format: json``, then plain prompting; repair and errors work as for OpenAI."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from falco_triage.analysis import analyze
from falco_triage.llm import NarrativeService
from falco_triage.llm.prompt import ANSWER_SCHEMA
from falco_triage.models.analysis import Analysis
from falco_triage.models.event import FalcoEvent
from falco_triage.models.narrative import NarrativeOutcome
from tests.support.fake_llm import FakeLlm, RecordingSleep, answer, error, settings_for, text
from tests.unit.factories import make_event

FP = "d" * 64


def _alert() -> tuple[Analysis, FalcoEvent]:
    event = make_event("Read sensitive file untrusted")
    return analyze(event), event


@pytest.fixture
async def ollama() -> AsyncIterator[FakeLlm]:
    async with FakeLlm("ollama") as server:
        yield server


async def test_native_chat_request_carries_schema_and_context_size(ollama: FakeLlm) -> None:
    settings = settings_for(ollama, num_ctx=16384, max_tokens=600, temperature=0.3)
    async with NarrativeService(settings, sleep=RecordingSleep()) as service:
        status = await service.narrate(*_alert(), FP)

    assert status.outcome is NarrativeOutcome.OK
    assert status.backend == "ollama"
    assert (status.prompt_tokens, status.completion_tokens) == (321, 54)
    [request] = ollama.requests
    assert request.path == "/api/chat"
    assert request.body["format"] == ANSWER_SCHEMA
    assert request.body["options"] == {"num_ctx": 16384, "num_predict": 600, "temperature": 0.3}
    assert request.body["stream"] is False
    assert request.body["model"] == "test-model"
    assert "Authorization" not in request.headers  # no key configured, none sent


async def test_old_ollama_gets_json_format_then_plain() -> None:
    async with (
        FakeLlm("ollama", refuse_modes={"schema"}) as ollama,
        NarrativeService(settings_for(ollama), sleep=RecordingSleep()) as service,
    ):
        await service.narrate(*_alert(), "1" * 64)
        await service.narrate(*_alert(), "2" * 64)
    assert [r.mode for r in ollama.requests] == ["schema", "json", "json"]

    async with (
        FakeLlm("ollama", refuse_modes={"schema", "json"}) as ollama,
        NarrativeService(settings_for(ollama), sleep=RecordingSleep()) as service,
    ):
        status = await service.narrate(*_alert(), FP)
    assert status.outcome is NarrativeOutcome.OK
    assert [r.mode for r in ollama.requests] == ["schema", "json", "plain"]
    assert "format" not in ollama.requests[-1].body


async def test_truncated_answer_is_repaired(ollama: FakeLlm) -> None:
    ollama.script(text('{"summary": "cut o', finish_reason="length"), answer())
    async with NarrativeService(settings_for(ollama), sleep=RecordingSleep()) as service:
        status = await service.narrate(*_alert(), FP)

    assert status.outcome is NarrativeOutcome.OK
    assert "token limit" in status.reason
    assert "token limit" in ollama.requests[1].messages[-1]["content"]
    assert (status.prompt_tokens, status.completion_tokens) == (642, 108)


async def test_server_errors_are_retried_then_recorded(ollama: FakeLlm) -> None:
    ollama.default = error(503)
    sleep = RecordingSleep()
    settings = settings_for(ollama, max_attempts=3, backoff_seconds=1.0)
    async with NarrativeService(settings, sleep=sleep) as service:
        status = await service.narrate(*_alert(), FP)

    assert status.outcome is NarrativeOutcome.ERROR
    assert status.reason == "server_error: HTTP 503 after 3 attempts"
    assert len(ollama.requests) == 3
    assert len(sleep.delays) == 2
    assert 0.5 <= sleep.delays[0] <= 1.0
    assert 1.0 <= sleep.delays[1] <= 2.0

"""Against a local OpenAI-compatible server: a valid answer is stored in the status with backend,
model, prompt version, tokens and latency; the request asks for strict JSON-schema output with
the configured model, limits and key; servers that refuse that get JSON mode, then plain
prompting, and the form that works is remembered; repeats are served from the cache; with the
feature off nothing is sent at all."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client import generate_latest

from falco_triage.analysis import analyze
from falco_triage.llm import PROMPT_VERSION, LlmSettings, NarrativeService
from falco_triage.models.analysis import Analysis
from falco_triage.models.event import FalcoEvent
from falco_triage.models.narrative import Confidence, NarrativeOutcome
from tests.support.fake_llm import VALID_ANSWER, FakeLlm, RecordingSleep, answer, settings_for
from tests.unit.factories import make_event

FP = "a" * 64


def _alert() -> tuple[Analysis, FalcoEvent]:
    event = make_event("Terminal shell in container")
    return analyze(event), event


@pytest.fixture
async def llm() -> AsyncIterator[FakeLlm]:
    async with FakeLlm("openai") as server:
        yield server


async def test_valid_answer_is_stored_with_its_costs(llm: FakeLlm) -> None:
    llm.script(answer(confidence="high"))
    async with NarrativeService(settings_for(llm), sleep=RecordingSleep()) as service:
        status = await service.narrate(*_alert(), FP)

    assert status.outcome is NarrativeOutcome.OK
    assert status.reason == ""
    assert status.narrative is not None
    assert status.narrative.summary == VALID_ANSWER["summary"]
    assert status.narrative.investigation_ideas == VALID_ANSWER["investigation_ideas"]
    assert status.narrative.confidence is Confidence.HIGH
    assert (status.backend, status.model, status.prompt_version) == (
        "openai",
        "test-model",
        PROMPT_VERSION,
    )
    assert (status.prompt_tokens, status.completion_tokens) == (321, 54)
    assert status.latency_ms is not None
    assert status.latency_ms >= 0
    assert status.cache_hit is False
    wire = status.wire()
    assert wire["narrative"]["investigationIdeas"] == VALID_ANSWER["investigation_ideas"]
    assert wire["promptVersion"] == PROMPT_VERSION


async def test_request_asks_for_strict_schema_output_with_configured_limits(
    llm: FakeLlm,
) -> None:
    settings = settings_for(llm, max_tokens=512, temperature=0.1, api_key="sk-test-123")
    async with NarrativeService(settings, sleep=RecordingSleep()) as service:
        await service.narrate(*_alert(), FP)

    [request] = llm.requests
    assert request.path == "/v1/chat/completions"
    body = request.body
    assert body["model"] == "test-model"
    assert body["max_tokens"] == 512
    assert body["temperature"] == 0.1
    assert body["stream"] is False
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["additionalProperties"] is False
    assert sorted(schema["required"]) == sorted(schema["properties"])
    assert [m["role"] for m in request.messages] == ["system", "user"]
    assert request.headers["Authorization"] == "Bearer sk-test-123"


async def test_newer_openai_models_get_max_completion_tokens_and_no_temperature(
    llm: FakeLlm,
) -> None:
    settings = settings_for(llm, max_tokens_param="max_completion_tokens", temperature=None)
    async with NarrativeService(settings, sleep=RecordingSleep()) as service:
        await service.narrate(*_alert(), FP)

    body = llm.requests[0].body
    assert body["max_completion_tokens"] == 800
    assert "max_tokens" not in body
    assert "temperature" not in body


async def test_refused_output_forms_fall_back_and_the_working_one_is_remembered() -> None:
    async with (
        FakeLlm("openai", refuse_modes={"json_schema"}) as llm,
        NarrativeService(settings_for(llm), sleep=RecordingSleep()) as service,
    ):
        first = await service.narrate(*_alert(), "1" * 64)
        second = await service.narrate(*_alert(), "2" * 64)

    assert first.outcome is second.outcome is NarrativeOutcome.OK
    assert [r.mode for r in llm.requests] == ["json_schema", "json_object", "json_object"]
    assert "JSON" in llm.requests[1].messages[0]["content"]  # JSON mode needs the word


async def test_plain_prompting_when_no_structured_output_is_supported() -> None:
    async with (
        FakeLlm("openai", refuse_modes={"json_schema", "json_object"}) as llm,
        NarrativeService(settings_for(llm), sleep=RecordingSleep()) as service,
    ):
        status = await service.narrate(*_alert(), FP)
        await service.narrate(*_alert(), "b" * 64)

    assert status.outcome is NarrativeOutcome.OK
    assert [r.mode for r in llm.requests] == ["json_schema", "json_object", "plain", "plain"]
    assert "response_format" not in llm.requests[-1].body


async def test_a_repeat_of_the_alert_is_served_from_the_cache(llm: FakeLlm) -> None:
    async with NarrativeService(settings_for(llm), sleep=RecordingSleep()) as service:
        first = await service.narrate(*_alert(), FP)
        again = await service.narrate(*_alert(), FP)
        other = await service.narrate(*_alert(), "c" * 64)
        metrics = generate_latest(service.metrics.registry).decode()

    assert len(llm.requests) == 2
    assert again.cache_hit is True
    assert again.outcome is NarrativeOutcome.OK
    assert again.narrative == first.narrative
    assert again.prompt_tokens is None
    assert again.latency_ms is None
    assert other.cache_hit is False
    assert 'falco_triage_llm_cache_hits_total{backend="openai"} 1.0' in metrics
    assert 'falco_triage_llm_calls_total{backend="openai",outcome="ok"} 3.0' in metrics
    assert 'falco_triage_llm_tokens_total{backend="openai",kind="prompt"} 642.0' in metrics
    assert 'falco_triage_llm_latency_seconds_count{backend="openai"} 2.0' in metrics


async def test_cache_is_keyed_by_model(llm: FakeLlm) -> None:
    async with NarrativeService(settings_for(llm), sleep=RecordingSleep()) as one:
        await one.narrate(*_alert(), FP)
    async with NarrativeService(settings_for(llm, model="other"), sleep=RecordingSleep()) as two:
        status = await two.narrate(*_alert(), FP)

    assert status.cache_hit is False
    assert [r.body["model"] for r in llm.requests] == ["test-model", "other"]


async def test_disabled_service_sends_nothing(llm: FakeLlm) -> None:
    async with NarrativeService(LlmSettings(url=llm.url)) as service:
        status = await service.narrate(*_alert(), FP)

    assert status.outcome is NarrativeOutcome.DISABLED
    assert status.narrative is None
    assert llm.requests == []


async def test_azure_style_base_url_keeps_its_query(llm: FakeLlm) -> None:
    settings = settings_for(llm, url=llm.url + "?api-version=2025-01-01", api_key_header="api-key")
    settings = settings.model_copy(update={"api_key": None})
    async with NarrativeService(settings, sleep=RecordingSleep()) as service:
        status = await service.narrate(*_alert(), FP)

    assert status.outcome is NarrativeOutcome.OK
    assert llm.requests[0].path == "/v1/chat/completions"

"""The API key reaches the endpoint and nowhere else: it is sent as ``Authorization: Bearer`` (or
Azure's ``api-key``), read from the mounted Secret file, and never appears in logs (even at
DEBUG, including httpx's own and on errors whose body quotes it), in the status, in metrics, or
in the repr of settings and service. Settings refuse keys in URLs and inconsistent options."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest
from pydantic import ValidationError

from falco_triage.analysis import analyze
from falco_triage.llm import LlmSettings, NarrativeService
from falco_triage.llm.transport import Transport
from falco_triage.models.analysis import Analysis
from falco_triage.models.event import FalcoEvent
from tests.support.fake_llm import (
    FakeLlm,
    RecordingSleep,
    answer,
    error,
    settings_for,
    slow,
    text,
)
from tests.unit.factories import make_event

KEY = "sk-live-7Hq2ZpXv9LmN4RtY8WcK3bJd"


def _alert() -> tuple[Analysis, FalcoEvent]:
    event = make_event("Terminal shell in container")
    return analyze(event), event


@pytest.fixture
async def llm() -> AsyncIterator[FakeLlm]:
    async with FakeLlm("openai") as server:
        yield server


async def test_key_is_sent_and_never_logged_stored_or_exported(
    llm: FakeLlm, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    llm.script(
        answer(),
        text("{broken"),
        answer(),
        error(401, echo_auth=True),
        error(500, echo_auth=True),
        error(429, retry_after="1"),
        answer(),
        slow(30),
    )
    settings = settings_for(llm, api_key=KEY, max_attempts=2, timeout_seconds=0.3)
    async with NarrativeService(settings, sleep=RecordingSleep()) as service:
        statuses = [await service.narrate(*_alert(), f"{i}" * 64) for i in range(6)]
        exported = generate_latest(service.metrics.registry).decode()
        shown = repr(service.__dict__)

    assert {r.headers["Authorization"] for r in llm.requests} == {f"Bearer {KEY}"}
    assert [s.reason.split(":")[0] for s in statuses] == [
        "",
        "repaired",
        "client_error",
        "rate_limited",  # a 500, then a 429
        "",
        "",  # a timeout, then the default answer
    ]
    assert not any("Incorrect API key" in s.reason for s in statuses)
    assert "[REDACTED]" in caplog.text  # the debug line is there, with the key replaced
    for where in (caplog.text, exported, shown, repr(settings), str(settings.model_dump())):
        assert KEY not in where
    for status in statuses:
        assert KEY not in status.model_dump_json()
        assert KEY[-8:] not in status.model_dump_json()


async def test_key_is_read_from_the_secret_file(llm: FakeLlm, tmp_path: Path) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text(KEY + "\n", encoding="utf-8")
    settings = settings_for(llm, api_key_file=key_file)
    async with NarrativeService(settings, sleep=RecordingSleep()) as service:
        await service.narrate(*_alert(), "a" * 64)

    assert llm.requests[0].headers["Authorization"] == f"Bearer {KEY}"


async def test_azure_api_key_header(llm: FakeLlm) -> None:
    settings = settings_for(llm, api_key=KEY, api_key_header="api-key")
    async with NarrativeService(settings, sleep=RecordingSleep()) as service:
        await service.narrate(*_alert(), "a" * 64)

    headers = llm.requests[0].headers
    assert headers["api-key"] == KEY
    assert "Authorization" not in headers


def test_missing_key_file_stops_start_with_the_setting_named(tmp_path: Path) -> None:
    settings = LlmSettings(
        enabled=True,
        url="http://127.0.0.1:9/v1",
        model="m",
        api_key_file=tmp_path / "absent",
    )
    with pytest.raises(ValueError, match=r"llm\.api_key_file"):
        NarrativeService(settings)


async def test_transport_repr_hides_the_key() -> None:
    settings = LlmSettings(api_key=KEY)
    async with httpx.AsyncClient() as client:
        transport = Transport(client, settings, settings.read_api_key())
        assert KEY not in repr(transport)
        assert "[REDACTED]" in repr(transport)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"url": f"https://user:{KEY}@api.example/v1"}, "must not carry credentials"),
        ({"url": "ftp://api.example/v1"}, "http:// or https://"),
        ({"enabled": True, "url": "https://api.example/v1"}, "needs llm.url and llm.model"),
        ({"api_key": KEY, "api_key_file": "/k"}, "not both"),
        ({"unknown": 1}, "Extra inputs are not permitted"),
    ],
)
def test_settings_refuse_unsafe_or_incomplete_values(
    values: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        LlmSettings.model_validate(values)
    assert KEY not in str(caught.value)

"""Fake language-model endpoints for the tests: OpenAI-compatible and Ollama-native.

A real HTTP server (aiohttp, 127.0.0.1, a free port) so the client code under test runs
unchanged: httpx, timeouts, headers, status codes, ``Retry-After``. Replies are scripted in
order (``script``); when the script is empty the ``default`` reply is used. Every request is
recorded (path, headers, raw and parsed body) before it is answered.

    async with FakeLlm("openai") as llm:
        llm.script(text("{not json"), answer(confidence="high"))
        ... LlmSettings(url=llm.url, ...) ...
        assert llm.requests[0].mode == "json_schema"

``refuse_modes`` makes the server answer 400 to a structured-output form it "does not support"
(as older vLLM, LocalAI or Ollama versions do) without consuming a scripted reply.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from aiohttp import web

from falco_triage.llm_settings import LlmSettings

Flavor = Literal["openai", "ollama"]

VALID_ANSWER: dict[str, Any] = {
    "summary": "An interactive shell was started in the web container, likely by a person.",
    "hypothesis": "Someone with exec rights opened a shell; check who ran kubectl exec.",
    "investigation_ideas": [
        "Review the API server audit log for exec calls into this pod.",
        "Compare the image digest with the one in the deployment manifest.",
    ],
    "confidence": "medium",
}


@dataclass
class Reply:
    """One scripted answer: an HTTP status, headers, the assistant text, a delay."""

    status: int = 200
    content: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw: bytes | None = None  # the exact body to send instead of a well-formed envelope
    echo_auth: bool = False  # error body quotes the credentials, as some providers do
    prompt_tokens: int = 321
    completion_tokens: int = 54
    finish_reason: str = "stop"


def answer(**fields: Any) -> Reply:
    """A valid narrative JSON answer (fields override :data:`VALID_ANSWER`)."""
    return Reply(content=json.dumps({**VALID_ANSWER, **fields}))


def text(content: str | None, **kwargs: Any) -> Reply:
    """An answer whose assistant text is exactly ``content`` (malformed JSON, prose, ...)."""
    return Reply(content=content, **kwargs)


def error(status: int, *, retry_after: str | None = None, echo_auth: bool = False) -> Reply:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return Reply(status=status, headers=headers, echo_auth=echo_auth)


def slow(seconds: float) -> Reply:
    """A valid answer that starts only after ``seconds`` (or when the server closes)."""
    return Reply(content=json.dumps(VALID_ANSWER), delay=seconds)


@dataclass(frozen=True)
class Recorded:
    path: str
    headers: dict[str, str]
    raw: bytes
    body: dict[str, Any]
    flavor: Flavor

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self.body["messages"]
        return messages

    @property
    def mode(self) -> str:
        """The structured-output form asked for (json_schema/json_object/plain, or Ollama's
        schema/json/plain)."""
        if self.flavor == "openai":
            fmt = self.body.get("response_format")
            return str(fmt["type"]) if isinstance(fmt, dict) else "plain"
        fmt = self.body.get("format")
        return "schema" if isinstance(fmt, dict) else "json" if fmt == "json" else "plain"


class FakeLlm:
    """A scripted OpenAI-compatible (``/v1/chat/completions``) or Ollama (``/api/chat``) server."""

    def __init__(self, flavor: Flavor = "openai", *, refuse_modes: Collection[str] = ()) -> None:
        self.flavor: Flavor = flavor
        self.refuse_modes = set(refuse_modes)
        self.default = answer()
        self.requests: list[Recorded] = []
        self._script: deque[Reply] = deque()
        self._closing = asyncio.Event()
        self._arrived = asyncio.Condition()
        self.gate: asyncio.Event | None = None  # when set, replies wait until it is set
        self.in_flight = 0
        self.max_in_flight = 0
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def url(self) -> str:
        """What ``llm.url`` is set to for this flavor."""
        base = f"http://127.0.0.1:{self._port}"
        return f"{base}/v1" if self.flavor == "openai" else base

    def script(self, *replies: Reply) -> None:
        self._script.extend(replies)

    async def wait_for_requests(self, count: int, within: float = 5.0) -> None:
        """Return once ``count`` requests have arrived; TimeoutError after ``within`` seconds."""
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)

    async def __aenter__(self) -> FakeLlm:
        app = web.Application()
        path = "/v1/chat/completions" if self.flavor == "openai" else "/api/chat"
        app.router.add_post(path, self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()  # releases slow replies still waiting
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        recorded = Recorded(
            path=request.path,
            headers=dict(request.headers),
            raw=raw,
            body=json.loads(raw),
            flavor=self.flavor,
        )
        async with self._arrived:
            self.requests.append(recorded)
            self._arrived.notify_all()
        if recorded.mode in self.refuse_modes:
            return web.json_response(
                {"error": {"message": f"{recorded.mode} is not supported", "type": "invalid"}},
                status=400,
            )
        reply = self._script.popleft() if self._script else self.default
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self._hold(reply)
        finally:
            self.in_flight -= 1
        if reply.raw is not None:
            return web.Response(body=reply.raw, status=reply.status, headers=reply.headers)
        if reply.status != 200:
            message = "failure"
            if reply.echo_auth:
                message = f"Incorrect API key provided: {request.headers.get('Authorization')}"
            return web.json_response(
                {"error": {"message": message, "type": "error"}},
                status=reply.status,
                headers=reply.headers,
            )
        return web.json_response(self._envelope(recorded, reply), headers=reply.headers)

    async def _hold(self, reply: Reply) -> None:
        """Wait for the reply's delay and the gate; closing the server ends every wait."""
        closing = asyncio.ensure_future(self._closing.wait())
        waits: list[asyncio.Future[object]] = []
        if reply.delay:
            waits.append(asyncio.ensure_future(asyncio.sleep(reply.delay)))
        if self.gate is not None:
            waits.append(asyncio.ensure_future(self.gate.wait()))
        try:
            for wait in waits:
                await asyncio.wait({wait, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in (*waits, closing):
                future.cancel()

    def _envelope(self, request: Recorded, reply: Reply) -> dict[str, Any]:
        model = request.body.get("model")
        if self.flavor == "ollama":
            return {
                "model": model,
                "created_at": "2026-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": reply.content},
                "done": True,
                "done_reason": "length" if reply.finish_reason == "length" else "stop",
                "prompt_eval_count": reply.prompt_tokens,
                "eval_count": reply.completion_tokens,
            }
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.content},
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            },
        }


class ManualClock:
    """A monotonic clock the test moves by hand (breaker and budget windows without sleeps)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingSleep:
    """Stands in for ``asyncio.sleep`` in retries: records each delay, waits for none."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


def settings_for(llm: FakeLlm, **overrides: Any) -> LlmSettings:
    """Settings pointing at ``llm``, enabled, with test-sized timeouts (each test may override)."""
    values: dict[str, Any] = {
        "enabled": True,
        "backend": llm.flavor,
        "url": llm.url,
        "model": "test-model",
        # Generous against a loaded CI machine; the slow-reply tests set their own small one.
        "timeout_seconds": 10.0,
        "total_timeout_seconds": 30.0,
        "backoff_seconds": 0.5,
    }
    values.update(overrides)
    return LlmSettings.model_validate(values)

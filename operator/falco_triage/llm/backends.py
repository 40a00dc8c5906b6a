"""Request and response shapes of the two supported APIs.

``openai``: any OpenAI-compatible ``POST {url}/chat/completions`` (OpenAI, Azure OpenAI's v1
API, vLLM, LocalAI, Ollama's ``/v1``, a LiteLLM proxy). ``ollama``: Ollama's native
``POST {url}/api/chat``, which unlike its ``/v1`` accepts ``options.num_ctx``.

Each backend asks for structured output in the strictest form first (a JSON schema), then JSON
mode, then plain prompting. A server that refuses a form with 400/422 is asked again in the
next one at once, and the first form that works is remembered so later requests skip the ones
it refused. The schema is also in the instructions, and every answer is validated anyway.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from falco_triage.llm.errors import BackendError, FailureReason
from falco_triage.llm.prompt import ChatMessage
from falco_triage.llm.transport import Transport
from falco_triage.llm_settings import LlmSettings

log = logging.getLogger(__name__)

# Statuses with which servers refuse a request field they do not support (vLLM and LiteLLM
# answer 400, some FastAPI-based servers 422).
_REFUSED_FORMAT = frozenset({400, 422})
SCHEMA_NAME = "falco_triage_narrative"


@dataclass(frozen=True)
class Completion:
    """The reply text (None when the model gave none) and what it cost."""

    text: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    truncated: bool
    mode: str


class Backend(ABC):
    """One endpoint; remembers which structured-output form it accepts."""

    name: ClassVar[str]
    modes: ClassVar[tuple[str, ...]]

    def __init__(self, transport: Transport, settings: LlmSettings) -> None:
        self._transport = transport
        self._settings = settings
        self._mode = 0

    @property
    def mode(self) -> str:
        """The structured-output form requests start with."""
        return self.modes[self._mode]

    async def complete(self, messages: Sequence[ChatMessage], schema: dict[str, Any]) -> Completion:
        """One answer; falls back to a weaker output form when the server refuses one."""
        for index in range(self._mode, len(self.modes)):
            mode = self.modes[index]
            try:
                data = await self._transport.post_json(
                    self.endpoint(), self.body(messages, schema, mode)
                )
            except BackendError as exc:
                if exc.status in _REFUSED_FORMAT and index + 1 < len(self.modes):
                    log.info(
                        "%s endpoint refused output mode %s (HTTP %s); trying %s",
                        self.name,
                        mode,
                        exc.status,
                        self.modes[index + 1],
                    )
                    continue
                raise
            if index != self._mode:
                log.info("%s endpoint: using output mode %s from now on", self.name, mode)
                self._mode = index
            return self.parse(data, mode)
        raise AssertionError("unreachable: the last mode either returns or raises")

    @abstractmethod
    def endpoint(self) -> str: ...

    @abstractmethod
    def body(
        self, messages: Sequence[ChatMessage], schema: dict[str, Any], mode: str
    ) -> dict[str, Any]: ...

    @abstractmethod
    def parse(self, data: dict[str, Any], mode: str) -> Completion: ...


class OpenAIBackend(Backend):
    name = "openai"
    modes = ("json_schema", "json_object", "plain")

    def endpoint(self) -> str:
        return join_url(self._settings.url, "chat/completions")

    def body(
        self, messages: Sequence[ChatMessage], schema: dict[str, Any], mode: str
    ) -> dict[str, Any]:
        s = self._settings
        body: dict[str, Any] = {
            "model": s.model,
            "messages": list(messages),
            s.max_tokens_param: s.max_tokens,
            "stream": False,
        }
        if s.temperature is not None:
            body["temperature"] = s.temperature
        if mode == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": SCHEMA_NAME, "strict": True, "schema": schema},
            }
        elif mode == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    def parse(self, data: dict[str, Any], mode: str) -> Completion:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise BackendError(FailureReason.BAD_RESPONSE, "the response has no choices")
        message = choices[0].get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):  # content parts, as some compatible servers send
            content = "".join(
                p.get("text", "")
                for p in content
                if isinstance(p, dict) and p.get("type") == "text"
            )
        usage = data.get("usage")
        if not isinstance(usage, dict):
            usage = {}
        return Completion(
            text=content if isinstance(content, str) else None,
            prompt_tokens=_count(usage.get("prompt_tokens")),
            completion_tokens=_count(usage.get("completion_tokens")),
            truncated=choices[0].get("finish_reason") == "length",
            mode=mode,
        )


class OllamaBackend(Backend):
    name = "ollama"
    modes = ("schema", "json", "plain")

    def endpoint(self) -> str:
        return join_url(self._settings.url, "api/chat")

    def body(
        self, messages: Sequence[ChatMessage], schema: dict[str, Any], mode: str
    ) -> dict[str, Any]:
        s = self._settings
        options: dict[str, Any] = {"num_ctx": s.num_ctx, "num_predict": s.max_tokens}
        if s.temperature is not None:
            options["temperature"] = s.temperature
        body: dict[str, Any] = {
            "model": s.model,
            "messages": list(messages),
            "stream": False,
            "options": options,
        }
        if mode == "schema":
            body["format"] = schema
        elif mode == "json":
            body["format"] = "json"
        return body

    def parse(self, data: dict[str, Any], mode: str) -> Completion:
        message = data.get("message")
        if not isinstance(message, dict):
            raise BackendError(FailureReason.BAD_RESPONSE, "the response has no message")
        content = message.get("content")
        return Completion(
            text=content if isinstance(content, str) else None,
            prompt_tokens=_count(data.get("prompt_eval_count")),
            completion_tokens=_count(data.get("eval_count")),
            truncated=data.get("done_reason") == "length",
            mode=mode,
        )


def make_backend(transport: Transport, settings: LlmSettings) -> Backend:
    kind = OllamaBackend if settings.backend == "ollama" else OpenAIBackend
    return kind(transport, settings)


def join_url(base: str, path: str) -> str:
    """``base`` with ``path`` appended to its path, query kept (Azure's ``?api-version=``)."""
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + path))


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

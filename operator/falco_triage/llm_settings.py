"""Settings of the optional narrative backend (``llm:`` in the settings file).

Off by default. When on, every alert's deterministic analysis plus an allow-listed, redacted
subset of its event is sent to the configured endpoint: see ``docs/llm.md`` for what leaves the
cluster. The API key comes from a mounted Secret (``api_key_file``) or ``api_key``; it is a
``SecretStr`` so it never shows in ``repr`` or logs. Validation errors quote no input here
(``hide_input_in_errors``); a model that nests this one decides for its own errors, so the
top-level ``Settings`` sets the same option.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator


class LlmSettings(BaseModel):
    """The narrative backend: where it is, what it may cost, when to stop calling it."""

    # NB: pydantic quotes the input in validation errors, and here the input may hold the key.
    # When nested, the outer model's setting is the one that counts (Settings sets it too).
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    enabled: bool = Field(default=False, description="Ask a language model for a narrative")
    backend: Literal["openai", "ollama"] = Field(
        default="openai",
        description="openai: any OpenAI-compatible /chat/completions; ollama: native /api/chat",
    )
    url: str = Field(
        default="",
        max_length=2048,
        description=(
            "Base URL: for openai the part before /chat/completions (https://api.openai.com/v1, "
            "http://ollama:11434/v1, http://vllm:8000/v1); for ollama the server "
            "(http://ollama:11434)"
        ),
    )
    model: str = Field(
        default="",
        max_length=256,
        validate_default=True,  # its validator checks that enabled has url and model
        description="Model name the endpoint knows",
    )
    api_key: SecretStr | None = Field(default=None, description="API key, if not from a file")
    api_key_file: Path | None = Field(
        default=None, description="File holding the API key (mounted from a Secret)"
    )
    api_key_header: Literal["authorization", "api-key"] = Field(
        default="authorization",
        description="authorization: 'Authorization: Bearer <key>'; api-key: Azure OpenAI's header",
    )
    timeout_seconds: float = Field(
        default=30.0, gt=0, le=600, description="Bound on one HTTP request, connect to last byte"
    )
    total_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        le=1800,
        description="Bound on one narration once it has a slot: retries, backoff, repair",
    )
    queue_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        le=1800,
        description="Longest wait for a free concurrency slot before giving up (busy)",
    )
    max_attempts: int = Field(
        default=3, ge=1, le=6, description="Tries per request on 429, 5xx and timeouts"
    )
    backoff_seconds: float = Field(
        default=1.0, ge=0, le=60, description="First retry delay; doubles per retry, jittered"
    )
    max_retry_wait_seconds: float = Field(
        default=30.0,
        ge=0,
        le=600,
        description="Longest Retry-After honoured by waiting; longer ones pause the backend",
    )
    max_tokens: int = Field(default=800, ge=64, le=8192, description="Answer length cap")
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = Field(
        default="max_tokens",
        description="openai: the request field for max_tokens (newer OpenAI models need "
        "max_completion_tokens)",
    )
    temperature: float | None = Field(
        default=0.2, ge=0, le=2, description="Sampling temperature; null sends none"
    )
    num_ctx: int = Field(
        default=8192,
        ge=2048,
        le=262_144,
        description="ollama: context window; Ollama's small default would cut the prompt",
    )
    concurrency: int = Field(default=2, ge=1, le=64, description="Requests in flight at once")
    queries_per_hour: int = Field(
        default=60,
        ge=1,
        le=100_000,
        description="Narrations sent per rolling hour (cache hits free)",
    )
    breaker_failures: int = Field(
        default=5, ge=1, le=100, description="Failed narrations in a row that open the breaker"
    )
    breaker_reset_seconds: float = Field(
        default=300.0, gt=0, le=86_400, description="How long an open breaker stops all calls"
    )
    cache_size: int = Field(
        default=1024, ge=0, le=100_000, description="Narrations kept in memory; 0 disables"
    )
    max_response_bytes: int = Field(
        default=1024 * 1024, ge=4096, le=16 * 1024 * 1024, description="Larger answers are refused"
    )

    # NB: each check is a field validator on a non-secret field, so the input pydantic quotes in
    # the error is that field (a URL, a path, a model name), never a dict holding the key.
    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value:
            parts = urlsplit(value)
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise ValueError("llm.url must be an http:// or https:// URL")
            if parts.username or parts.password:
                # Credentials in a URL end up in logs and error messages; keys have a Secret.
                raise ValueError("llm.url must not carry credentials; use llm.api_key_file")
        return value

    @field_validator("model")
    @classmethod
    def _enabled_needs_endpoint(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("enabled") and not (info.data.get("url") and value):
            raise ValueError("llm.enabled needs llm.url and llm.model")
        return value

    @field_validator("api_key_file")
    @classmethod
    def _one_key_source(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and info.data.get("api_key") is not None:
            raise ValueError("set llm.api_key or llm.api_key_file, not both")
        return value

    def read_api_key(self) -> SecretStr | None:
        """The API key from ``api_key`` or the Secret file (stripped), or None for no key."""
        if self.api_key_file is None:
            return self.api_key
        try:
            text = self.api_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"llm.api_key_file {self.api_key_file}: {exc.strerror}") from None
        return SecretStr(text) if text else None

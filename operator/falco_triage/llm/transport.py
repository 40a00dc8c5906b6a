"""POST JSON to a model endpoint: bounded in time and size, retried only when retrying helps.

Retries happen on 429, 5xx and timeouts (with exponential, jittered backoff, or exactly the
server's ``Retry-After`` when it sends one); other failures are final at once. A ``Retry-After``
longer than ``max_retry_wait_seconds`` is not waited out here: the error carries it so the
circuit breaker can pause the backend for that long instead of holding a slot.

The API key is a header built once; debug logs print headers with it replaced.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from falco_triage.llm.errors import BackendError, FailureReason
from falco_triage.llm_settings import LlmSettings

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
_SECRET_HEADERS = frozenset({"authorization", "api-key", "proxy-authorization"})
_USER_AGENT = "falco-triage (narrative)"


class Transport:
    """One endpoint's HTTP client settings: headers, limits, retries."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: LlmSettings,
        api_key: SecretStr | None,
        *,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._client = client
        self._timeout = settings.timeout_seconds
        self._attempts = settings.max_attempts
        self._backoff = settings.backoff_seconds
        self._max_wait = settings.max_retry_wait_seconds
        self._max_bytes = settings.max_response_bytes
        self._sleep = sleep
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": _USER_AGENT,
        }
        if api_key is not None:
            if settings.api_key_header == "api-key":
                self._headers["api-key"] = api_key.get_secret_value()
            else:
                self._headers["Authorization"] = f"Bearer {api_key.get_secret_value()}"

    def __repr__(self) -> str:
        return f"Transport(headers={safe_headers(self._headers)})"

    async def post_json(self, url: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON object the endpoint answered with; :class:`BackendError` otherwise."""
        content = json.dumps(body, ensure_ascii=False).encode("utf-8")
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._once(url, content)
            except BackendError as exc:
                exc.attempts = attempt
                if not exc.retryable or attempt >= self._attempts:
                    raise
                delay = exc.retry_after if exc.retry_after is not None else self._delay(attempt)
                if delay > self._max_wait:
                    raise
                log.info("LLM request failed (%s), retry %d in %.1fs", exc.message, attempt, delay)
                await self._sleep(delay)

    def _delay(self, attempt: int) -> float:
        # Full doubling with jitter in [50%, 100%] spreads retries of concurrent requests.
        base = min(self._max_wait, self._backoff * 2.0 ** (attempt - 1))
        return base * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not security

    async def _once(self, url: str, content: bytes) -> dict[str, Any]:
        log.debug(
            "POST %s (%d bytes) headers=%s",
            loggable_url(url),
            len(content),
            safe_headers(self._headers),
        )
        try:
            # NB: httpx's timeout bounds each read, so a server dripping bytes could run for
            # ever; this bounds the whole exchange.
            async with (
                asyncio.timeout(self._timeout),
                self._client.stream("POST", url, content=content, headers=self._headers) as resp,
            ):
                raw = await _read_bounded(resp, self._max_bytes)
                status, headers = resp.status_code, resp.headers
        except (TimeoutError, httpx.TimeoutException):
            raise BackendError(
                FailureReason.TIMEOUT,
                f"no answer within {self._timeout:g}s",
                retryable=True,
            ) from None
        except httpx.HTTPError as exc:
            raise BackendError(
                FailureReason.CONNECTION, f"{type(exc).__name__} talking to the endpoint"
            ) from None
        return _interpret(status, headers, raw)


def _interpret(status: int, headers: Mapping[str, str], raw: bytes) -> dict[str, Any]:
    if status == 429:
        raise BackendError(
            FailureReason.RATE_LIMITED,
            "HTTP 429 (rate limited)",
            status=status,
            retryable=True,
            retry_after=retry_after(headers.get("retry-after")),
        )
    if status >= 500:
        raise BackendError(
            FailureReason.SERVER_ERROR,
            f"HTTP {status}",
            status=status,
            retryable=True,
            retry_after=retry_after(headers.get("retry-after")),
        )
    if not 200 <= status < 300:
        # NB: the error body is not kept: providers echo parts of the key in 401 messages.
        raise BackendError(FailureReason.CLIENT_ERROR, f"HTTP {status}", status=status)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise BackendError(FailureReason.BAD_RESPONSE, "the response is not JSON") from None
    if not isinstance(data, dict):
        raise BackendError(FailureReason.BAD_RESPONSE, "the response is not a JSON object")
    return data


async def _read_bounded(resp: httpx.Response, limit: int) -> bytes:
    declared = resp.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BackendError(FailureReason.TOO_LARGE, f"response larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise BackendError(FailureReason.TOO_LARGE, f"response larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), if valid."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def safe_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers fit for a log line: credentials replaced."""
    return {k: "[REDACTED]" if k.lower() in _SECRET_HEADERS else v for k, v in headers.items()}


def loggable_url(url: str) -> str:
    """Scheme, host and path only: a query string may carry a key (``?api-key=``)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"

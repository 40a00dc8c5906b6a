"""Why a narration failed: one small vocabulary for status reasons, logs and metric labels."""

from __future__ import annotations

from enum import StrEnum


class FailureReason(StrEnum):
    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    CLIENT_ERROR = "client_error"
    CONNECTION = "connection"
    TOO_LARGE = "too_large"
    BAD_RESPONSE = "bad_response"
    INVALID_ANSWER = "invalid_answer"
    BREAKER_OPEN = "breaker_open"
    BUDGET = "budget"
    BUSY = "busy"
    DEADLINE = "deadline"
    INTERNAL = "internal"


class BackendError(Exception):
    """The backend did not give a usable HTTP answer.

    ``message`` is safe to store and log: it never holds request or response bodies (an error
    body may quote the prompt or echo part of the API key) nor headers.
    """

    def __init__(
        self,
        reason: FailureReason,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.attempts = 1

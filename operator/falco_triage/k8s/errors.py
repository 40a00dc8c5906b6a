"""Kubernetes API failures, translated once at the edge into errors callers can act on.

Callers never see ``ApiException`` or urllib3 errors: they catch :class:`NotFound`,
:class:`Conflict`, :class:`Forbidden`, :class:`Invalid` or :class:`Transient` and read a
message a person can act on (``falcoalerts.falcotriage.io "x" already exists``, not a dump of
response headers).

:class:`Transient` also says whether the request may have been applied although no answer
came back (``maybe_applied``): a non-idempotent write that lost its connection after being
sent. Blindly retrying such a write can apply it twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

_MAX_MESSAGE = 1024


class ApiError(Exception):
    """A failed Kubernetes API call; ``status`` is the HTTP status (0 when none came back)."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        reason: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason
        self.details = details or {}


class NotFound(ApiError):
    """404: the object (or its namespace) does not exist."""


class Conflict(ApiError):
    """409: already exists, or the resourceVersion we based a write on is stale."""

    @property
    def already_exists(self) -> bool:
        return self.reason == "AlreadyExists"


class Forbidden(ApiError):
    """401/403: not allowed (RBAC, or the namespace is being deleted)."""


class Invalid(ApiError):
    """400/422: the API server rejected the object itself; retrying the same body won't help."""


class Transient(ApiError):
    """429, 5xx, timeouts and connection failures: retry later, with backoff.

    ``retry_after`` is the server's Retry-After in seconds, when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        reason: str = "",
        retry_after: float | None = None,
        maybe_applied: bool = False,
    ) -> None:
        super().__init__(message, status=status, reason=reason)
        self.retry_after = retry_after
        self.maybe_applied = maybe_applied


def translate(exc: BaseException, *, write: bool = False) -> ApiError:
    """The :class:`ApiError` for an exception raised by the kubernetes client.

    ``write`` marks non-idempotent requests (create, patch), for which a lost answer makes the
    outcome unknown.
    """
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ApiException):
        return _from_api_exception(exc, write=write)
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return _from_transport_error(exc, write=write)
    return ApiError(f"Kubernetes API call failed: {type(exc).__name__}: {exc}"[:_MAX_MESSAGE])


@contextmanager
def translated(*, write: bool = False) -> Iterator[None]:
    """Run a client call, re-raising its failures as :class:`ApiError` subclasses."""
    try:
        yield
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise translate(exc, write=write) from exc


def _from_api_exception(exc: ApiException, *, write: bool) -> ApiError:
    status = int(exc.status or 0)
    body = _status_body(exc.body)
    reason = str(body.get("reason") or exc.reason or "")
    message = str(body.get("message") or f"HTTP {status} {exc.reason or ''}".strip())
    message = message[:_MAX_MESSAGE]
    details = body.get("details") if isinstance(body.get("details"), dict) else None
    if status == 404:
        return NotFound(message, status=status, reason=reason, details=details)
    if status == 409:
        return Conflict(message, status=status, reason=reason, details=details)
    if status in (401, 403):
        return Forbidden(message, status=status, reason=reason, details=details)
    if status in (400, 422):
        return Invalid(message, status=status, reason=reason, details=details)
    if status == 429 or status >= 500:
        # NB: a 504 (or 500) can come after the write reached etcd; 429 and 503 never do.
        maybe = write and status not in (429, 503)
        return Transient(
            message,
            status=status,
            reason=reason,
            retry_after=_retry_after(exc),
            maybe_applied=maybe,
        )
    return ApiError(message, status=status, reason=reason, details=details)


def _from_transport_error(exc: BaseException, *, write: bool) -> Transient:
    # A refused or failed connection never carried the request; anything after that (a reset,
    # a read timeout) may have lost the answer to a request the server did apply.
    never_sent = isinstance(
        exc,
        urllib3.exceptions.NewConnectionError
        | urllib3.exceptions.ConnectTimeoutError
        | ConnectionRefusedError,
    ) or (
        isinstance(exc, urllib3.exceptions.MaxRetryError)
        and isinstance(
            exc.reason,
            urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError,
        )
    )
    text = str(getattr(exc, "reason", None) or exc) or type(exc).__name__
    return Transient(
        f"Kubernetes API unreachable: {text}"[:_MAX_MESSAGE],
        reason=type(exc).__name__,
        maybe_applied=write and not never_sent,
    )


def _status_body(body: object) -> dict[str, Any]:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not isinstance(body, str) or not body:
        return {}
    try:
        parsed = json.loads(body)
    except ValueError:
        return {"message": body[:_MAX_MESSAGE]}
    return parsed if isinstance(parsed, dict) else {}


def _retry_after(exc: ApiException) -> float | None:
    headers = exc.headers or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None

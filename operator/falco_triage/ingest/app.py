"""The HTTP receiver: ``POST /v1/events``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``.

``POST /v1/events`` takes one Falco event, a JSON array of them, or NDJSON, exactly as Falco's
``http_output`` (with ``json_output: true``) and Falcosidekick's webhook output send them.
Checks run cheapest first and nothing is queued unless every check passes:

1. authentication (401, before the body is read);
2. declared body size (413, before the body is read), then actual size while reading, within
   ``body_timeout`` of the request head (408 and the connection closed otherwise);
3. UTF-8, JSON, nesting depth, event count (400/413, see :mod:`falco_triage.events.parse`);
4. every event's fields (400, see :mod:`falco_triage.events.normalize`).

Answers: 200 ``{"accepted": n, "aggregated": a, "shed": s}`` once events are in the write
buffer (``aggregated`` of them merged into alerts already waiting; ``shed`` of them dropped at
once because the buffer is full of more severe alerts). If *every* event was shed the answer is
503 with ``Retry-After`` instead: nothing was acknowledged, so a retry is safe. Errors are
``{"error": {"code": …, "message": …}}``.

Slow clients are cut off: a request head must arrive within ``header_timeout`` of the
connection opening or of its previous answer (aiohttp's keep-alive timer, which closes a
connection waiting for a complete head), and its body within ``body_timeout`` after that.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from falco_triage.events.parse import Limits, PayloadError, parse_payload
from falco_triage.ingest.auth import Authenticator
from falco_triage.ingest.intake import Admission, Intake
from falco_triage.ingest.metrics import Metrics
from falco_triage.ingest.queue import WriteQueue

log = logging.getLogger(__name__)

EVENTS_PATH = "/v1/events"
_READ_CHUNK = 64 * 1024
_RETRY_AFTER_SECONDS = "5"
_ENCODE = msgspec.json.Encoder().encode

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


@dataclass
class Receiver:
    """Everything the handlers use; built by :mod:`falco_triage.ingest.server`."""

    limits: Limits
    auth: Authenticator
    intake: Intake
    queue: WriteQueue
    metrics: Metrics
    writer_running: Callable[[], bool]
    header_timeout: float
    body_timeout: float
    stopping: bool = False


def build_server(receiver: Receiver) -> web.Server:
    """The HTTP server for ``receiver``.

    NB: aiohttp's low-level server, not ``web.Application``: with four fixed routes a router,
    middlewares and signals cost a fifth of the CPU of a single-event request and buy nothing.
    """
    handlers = _Handlers(receiver)
    routes: dict[str, tuple[str, Handler]] = {
        EVENTS_PATH: ("POST", handlers.post_events),
        "/healthz": ("GET", handlers.healthz),
        "/readyz": ("GET", handlers.readyz),
        "/metrics": ("GET", handlers.metrics),
    }

    async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
        route = routes.get(request.path)
        if route is None:
            return _error(404, "not_found", f"no such path; events go to POST {EVENTS_PATH}")
        method, handler = route
        if request.method != method:
            response = _error(405, "method_not_allowed", f"{request.path} takes {method}")
            response.headers["Allow"] = method
            return response
        return await handler(request)

    def make_request(
        message: Any, payload: Any, protocol: Any, writer: Any, task: Any
    ) -> web.BaseRequest:
        # aiohttp's own body cap sits just above ours, so our check (and its JSON error) fires.
        return web.BaseRequest(
            message,
            payload,
            protocol,
            writer,
            task,
            asyncio.get_running_loop(),
            client_max_size=receiver.limits.max_body_bytes + 1,
        )

    # NB: no access log: at thousands of requests a second it would cost more than the work.
    # NB: aiohttp has no timeout for reading a request head; its keep-alive timer closes a
    # connection that waits for one, counted from the connection's start or its last answer,
    # so it bounds both idle keep-alive connections and heads trickling in (slowloris).
    return web.Server(
        dispatch,
        request_factory=make_request,
        access_log=None,
        keepalive_timeout=receiver.header_timeout,
    )


class _Handlers:
    def __init__(self, receiver: Receiver) -> None:
        self._r = receiver
        self._m = receiver.metrics
        self._tally = receiver.metrics.tally  # NB: counted in bulk, see Metrics.flush

    async def post_events(self, request: web.BaseRequest) -> web.Response:
        started = time.perf_counter()
        try:
            response = await self._post_events(request)
        except PayloadError as exc:
            self._m.requests_rejected.labels(exc.code).inc()
            response = _error(exc.status, exc.code, exc.message)
            if exc.status == 408:
                response.force_close()  # the rest of the body may never come
        except Exception:  # NB: no input may cause a 5xx; if a bug does, say so loudly
            log.exception("bug: unexpected error handling POST %s", EVENTS_PATH)
            response = _error(500, "internal_error", "unexpected error; see the receiver's log")
        if response.status == 200:
            self._tally.ok_requests += 1
        else:
            self._m.requests.labels(str(response.status)).inc()
        self._m.request_duration.observe(time.perf_counter() - started)
        return response

    async def _post_events(self, request: web.BaseRequest) -> web.Response:
        r = self._r
        if r.stopping:
            # NB: listening has stopped, but open keep-alive connections can still send; what
            # arrives now could not be written before exit, so it is refused, not acknowledged.
            response = _error(503, "shutting_down", "the receiver is shutting down; retry")
            response.headers["Retry-After"] = "1"
            return response
        if not r.auth.check(request.headers.get("Authorization"), _peer_certificate(request, r)):
            self._m.requests_rejected.labels("unauthorized").inc()
            response = _error(
                401, "unauthorized", "a valid bearer token or client certificate is required"
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="falco-triage"'
            return response
        body = await _read_body(request, r.limits.max_body_bytes, r.body_timeout)
        raws = parse_payload(body, r.limits)
        tally = self._tally
        tally.received += len(raws)
        try:
            checked = r.intake.check(raws)
        except PayloadError as exc:
            self._m.events_rejected.labels(exc.code).inc(len(raws))
            raise
        admission = r.intake.admit(checked)
        tally.accepted += admission.accepted
        tally.aggregated += admission.aggregated
        if admission.accepted == 0:
            result = {"accepted": 0, "aggregated": 0, "shed": admission.shed}
            response = _json(503, {"error": _buffer_full(r.queue), **result})
            response.headers["Retry-After"] = _RETRY_AFTER_SECONDS
            return response
        return _accepted(admission)

    async def healthz(self, request: web.BaseRequest) -> web.Response:
        return _json(200, {"status": "ok"})

    async def readyz(self, request: web.BaseRequest) -> web.Response:
        """Ready to take traffic: writing, not shutting down, and room in the buffer."""
        r = self._r
        if r.stopping:
            return _json(503, {"status": "stopping"})
        if not r.writer_running():
            return _json(503, {"status": "writer not running"})
        if r.queue.full:
            return _json(503, {"status": "write buffer full", "pending": len(r.queue)})
        return _json(200, {"status": "ready", "pending": len(r.queue)})

    async def metrics(self, request: web.BaseRequest) -> web.Response:
        self._m.flush()
        return web.Response(
            body=generate_latest(self._r.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )


def _peer_certificate(request: web.BaseRequest, receiver: Receiver) -> object:
    """The verified client certificate, if mTLS is on (only then is there one to look up)."""
    transport = request.transport
    if not receiver.auth.mtls or transport is None:
        return None
    return transport.get_extra_info("peercert")


async def _read_body(request: web.BaseRequest, limit: int, deadline: float) -> bytes:
    """The body, read within ``deadline`` seconds; :class:`PayloadError` otherwise."""
    try:
        declared = request.content_length
        if declared is not None and declared > limit:
            raise _too_large(declared, limit)
        content = request.content
        if content.is_eof():
            # The whole body came with the head (a single event always does): take what is
            # buffered, without waiting and without copying.
            return _within(content.read_nowait(), limit, declared)
        async with asyncio.timeout(deadline):
            return await _read_bounded(request, limit, declared)
    except TimeoutError:
        raise PayloadError(
            "body_timeout", f"the request body did not arrive within {deadline:g} s", 408
        ) from None
    except (RequestPayloadError, HttpProcessingError) as exc:
        # A body aiohttp could not decode: bad gzip/deflate data, a broken chunked encoding.
        cause = exc.__cause__ or exc
        raise PayloadError(
            "invalid_body", f"request body could not be decoded: {type(cause).__name__}", 400
        ) from None
    except ConnectionError:
        # The client went away mid-body; the answer will not reach it, but nothing is accepted.
        raise PayloadError(
            "incomplete_body", "the connection closed before the body ended", 400
        ) from None


async def _read_bounded(request: web.BaseRequest, limit: int, declared: int | None) -> bytes:
    if declared is not None:
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _inflated(limit) from None
    # Chunked: count while reading, and stop at the first byte over the limit.
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit, at_least=True)
        chunks.append(chunk)
    return b"".join(chunks)


def _within(body: bytes, limit: int, declared: int | None) -> bytes:
    if len(body) <= limit:
        return body
    raise _inflated(limit) if declared is not None else _too_large(len(body), limit, at_least=True)


def _inflated(limit: int) -> PayloadError:
    # A compressed body (Content-Encoding: gzip) within the limit that inflates past it.
    return PayloadError(
        "body_too_large", f"request body inflates to more than {limit} bytes, the limit", 413
    )


def _too_large(size: int, limit: int, *, at_least: bool = False) -> PayloadError:
    more = "more than " if at_least else ""
    return PayloadError(
        "body_too_large", f"request body is {more}{size} bytes; the limit is {limit}", 413
    )


def _buffer_full(queue: WriteQueue) -> dict[str, str]:
    return {
        "code": "buffer_full",
        "message": f"write buffer full ({len(queue)} alerts waiting) with more severe alerts; "
        "nothing from this request was accepted, retry later",
    }


@functools.lru_cache(maxsize=64)
def _accepted_body(accepted: int, aggregated: int, shed: int) -> bytes:
    return _ENCODE({"accepted": accepted, "aggregated": aggregated, "shed": shed})


def _accepted(admission: Admission) -> web.Response:
    # Single-event requests answer one of a handful of bodies: cache them, not re-encode them.
    accepted, aggregated, shed = admission.accepted, admission.aggregated, admission.shed
    if accepted <= 4:
        body = _accepted_body(accepted, aggregated, shed)
    else:
        body = _ENCODE({"accepted": accepted, "aggregated": aggregated, "shed": shed})
    return web.Response(body=body, content_type="application/json")


def _error(status: int, code: str, message: str) -> web.Response:
    return _json(status, {"error": {"code": code, "message": message}})


def _json(status: int, payload: dict[str, Any]) -> web.Response:
    # NB: the standard encoder here: it escapes anything (msgspec refuses lone surrogates), and
    # these answers are rare.
    return web.Response(
        status=status,
        body=json.dumps(payload, separators=(",", ":")).encode(),
        content_type="application/json",
    )

"""Run the receiver: on its own (``falco-triage ingest``) or inside another asyncio program.

:func:`start_ingest` wires settings into the pieces (auth, limits, queue, writer, HTTP app)
and starts listening; :meth:`IngestRunner.stop` stops accepting, flushes the write buffer for
a bounded time and logs what could not be written. :func:`run_ingest` does both around a
SIGTERM/SIGINT wait, which is what the Deployment runs, on uvloop's event loop where it is
installed (:func:`run_event_loop`): per request, most of the receiver's CPU goes to the event
loop and the HTTP machinery, and uvloop's loop and transports (libuv, in C) take a good part
of it off.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import time
from collections import Counter as Tally
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from falco_triage.events.parse import Limits
from falco_triage.ingest.app import Receiver, build_server
from falco_triage.ingest.auth import AuthConfigError, Authenticator, server_ssl_context
from falco_triage.ingest.intake import Intake
from falco_triage.ingest.metrics import Metrics
from falco_triage.ingest.queue import PendingAlert, TokenBucket, WriteQueue
from falco_triage.ingest.writer import AlertWriter, Recorder, WriterConfig
from falco_triage.k8s.alerts import AlertStore, Observer
from falco_triage.k8s.client import ApiClient, ClientConfigError, api_client
from falco_triage.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

_SHED_LOG_INTERVAL = 1.0  # shed events are summed and logged at most once a second


@dataclass
class ShedReporter:
    """Counts every shed event in the metric and sums them into the log, never silently."""

    metrics: Metrics
    queue_capacity: int
    _events: Tally[str] = field(default_factory=Tally)
    _rules: Tally[str] = field(default_factory=Tally)
    _reasons: set[str] = field(default_factory=set)
    _last: float = 0.0

    def __call__(self, entry: PendingAlert, why: str) -> None:
        priority = entry.event.priority.value
        self.metrics.events_shed.labels(priority).inc(entry.count)
        self._events[priority] += entry.count
        self._rules[entry.event.rule] += entry.count
        self._reasons.add(why)
        if time.monotonic() - self._last >= _SHED_LOG_INTERVAL:
            self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        if not self._events:
            return
        total = sum(self._events.values())
        top = ", ".join(f"{rule!r}: {n}" for rule, n in self._rules.most_common(5))
        log.warning(
            "shed %d events (%s; capacity %d alerts): by priority %s; top rules %s",
            total,
            ", ".join(sorted(self._reasons)),
            self.queue_capacity,
            dict(self._events),
            top,
        )
        self._events.clear()
        self._rules.clear()
        self._reasons.clear()


class IngestRunner:
    """A started receiver. ``port`` is the bound port (useful with port 0)."""

    def __init__(
        self,
        settings: Settings,
        runner: web.ServerRunner,
        site: web.TCPSite,
        receiver: Receiver,
        writer: AlertWriter,
        shed: ShedReporter,
    ) -> None:
        self.settings = settings
        self.metrics = receiver.metrics
        self.queue = receiver.queue
        self._runner = runner
        self._site = site
        self._receiver = receiver
        self._writer = writer
        self._shed = shed
        self._ticker = asyncio.create_task(self._tick(), name="falco-triage-shed-log")
        self._stopped: int | None = None

    @property
    def port(self) -> int:
        addresses = self._runner.addresses
        return int(addresses[0][1]) if addresses else self.settings.ingest.port

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.ingest.tls_cert_file else "http"
        host = self.settings.ingest.host
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - display only
        return f"{scheme}://{host}:{self.port}"

    async def stop(self, flush_seconds: float | None = None) -> int:
        """Stop accepting, write what is buffered for up to ``flush_seconds`` (default from
        settings), stop. Returns the number of acknowledged events left unwritten."""
        if self._stopped is not None:
            return self._stopped
        flush = (
            self.settings.ingest.shutdown_flush_seconds if flush_seconds is None else flush_seconds
        )
        self._receiver.stopping = True
        # Stop listening first so nothing new is acknowledged while we flush.
        await self._site.stop()
        log.info("receiver stopped listening; flushing %d waiting alerts", len(self.queue))
        unwritten = await self._writer.stop(flush)
        self._ticker.cancel()
        self._shed.flush()
        self.metrics.flush()
        await self._runner.cleanup()
        self._stopped = unwritten
        return unwritten

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(_SHED_LOG_INTERVAL)
            self._shed.flush()
            self.metrics.flush()


StoreFactory = Callable[[Callable[[], None], Observer], Recorder]
"""Builds the alert store from the rate limiter's ``acquire`` and the metrics observer."""


async def start_ingest(
    settings: Settings,
    *,
    api: ApiClient | None = None,
    make_store: StoreFactory | None = None,
    metrics: Metrics | None = None,
    port: int | None = None,
) -> IngestRunner:
    """Start the receiver in the running event loop and return once it listens.

    Writes go through ``api`` (default: the process-wide Kubernetes client), or through the
    store ``make_store`` builds (benchmarks, fakes). ``port`` overrides the settings (0 picks a
    free port, for tests).
    """
    ingest = settings.ingest
    metrics = metrics or Metrics()
    auth = Authenticator(settings.ingest)
    limits = Limits.from_settings(ingest)
    shed = ShedReporter(metrics, ingest.queue_capacity)
    queue = WriteQueue(ingest.queue_capacity, on_shed=shed)
    metrics.watch_queue(lambda: len(queue), lambda: queue.events, ingest.queue_capacity)
    bucket = TokenBucket(ingest.write_qps, ingest.write_burst)
    if make_store is not None:
        store = make_store(bucket.acquire, metrics.observe_api)
    else:
        store = AlertStore(
            api or api_client(), throttle=bucket.acquire, observe=metrics.observe_api
        )
    writer = AlertWriter(
        queue,
        store,
        metrics,
        WriterConfig(default_namespace=settings.namespace, workers=ingest.write_workers),
    )
    intake = Intake(
        queue,
        limits,
        default_namespace=settings.namespace,
        window_seconds=ingest.aggregation_window_seconds,
    )
    receiver = Receiver(
        limits,
        auth,
        intake,
        queue,
        metrics,
        lambda: writer.running,
        header_timeout=ingest.header_timeout_seconds,
        body_timeout=ingest.body_timeout_seconds,
    )
    runner = web.ServerRunner(build_server(receiver), handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(
        runner,
        ingest.host,
        ingest.port if port is None else port,
        ssl_context=server_ssl_context(ingest),
        backlog=1024,
    )
    await site.start()
    writer.start()
    started = IngestRunner(settings, runner, site, receiver, writer, shed)
    log.info(
        "receiver listening on %s (auth: %s; writes ≤ %.1f/s, burst %d; buffer %d alerts)",
        started.url,
        "disabled" if auth.disabled else ", ".join(_auth_modes(auth)),
        ingest.write_qps,
        ingest.write_burst,
        ingest.queue_capacity,
    )
    return started


def run_ingest(settings: Settings) -> None:
    """Run the receiver until SIGTERM or SIGINT, then flush and exit (blocking).

    A configuration it cannot start with (no authentication, no Kubernetes credentials,
    unreadable certificates, a port in use) exits with status 2 and one clear log line.
    """
    try:
        run_event_loop(_serve(settings))
    except (AuthConfigError, ClientConfigError, OSError, ssl.SSLError) as exc:
        log.error("the receiver cannot start: %s", exc)
        raise SystemExit(2) from None


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, on uvloop's event loop if it is installed (a dependency except on
    Windows, which it does not support), else on asyncio's own."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        factory = None
    else:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


async def _serve(settings: Settings) -> None:
    # NB: during an API outage urllib3 warns about every connection retry; the writer already
    # logs each failed write with its retry plan, so keep only urllib3's errors.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    runner = await start_ingest(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("signal received; shutting down")
    unwritten = await runner.stop()
    if unwritten:
        log.error("%d acknowledged events could not be written before exit", unwritten)


def _auth_modes(auth: Authenticator) -> list[str]:
    modes = []
    if auth.has_tokens:
        modes.append("bearer token")
    if auth.mtls:
        modes.append("mTLS client certificate")
    return modes

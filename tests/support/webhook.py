"""A Slack-style incoming webhook on 127.0.0.1 for tests: records every POST it accepts.

Runs an aiohttp server on its own event loop in a daemon thread, so synchronous tests can use
it as a context manager::

    with WebhookReceiver() as hook:
        create_secret(cluster, ns, "slack", url=hook.url)
        ...
        wait_for(lambda: hook.received, timeout=30, what="a webhook call")
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from tests.support.processes import free_port

_START_TIMEOUT = 10.0  # seconds for the server thread to bind its port


class WebhookReceiver:
    def __init__(self) -> None:
        self.port = free_port()
        # A secret path, as real webhook URLs have: it must never show up in the alert.
        self.token = secrets.token_hex(8)
        self.received: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="webhook-receiver", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/{self.token}"

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=404)
        self.received.append(json.loads(await request.text()))
        return web.Response(text="ok")

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/services/{token}", self._handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            raise RuntimeError("the webhook receiver did not start")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=_START_TIMEOUT)

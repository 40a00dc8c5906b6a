"""The HTTP receiver end to end (real aiohttp server on 127.0.0.1, an in-memory store instead
of the API server): the three body shapes are accepted and written to the right alerts; every
rejection path answers its 4xx JSON error, changes nothing and is counted; no input — including
fuzzed payloads — produces a 5xx; a full buffer sheds with a metric and a 503 when nothing was
taken; health, readiness and Prometheus metrics are served."""

from __future__ import annotations

import asyncio
import gzip
import json
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from falco_triage.ingest.server import IngestRunner, start_ingest
from falco_triage.settings import IngestSettings, Settings
from tests.unit.factories import FakeAlertStore, make_raw_event, sample_files

TOKEN = "s3cr3t-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OPERATOR_NS = "falco-triage"


class Receiver:
    def __init__(self, runner: IngestRunner, store: FakeAlertStore, session: aiohttp.ClientSession):
        self.runner = runner
        self.store = store
        self.session = session
        self.url = runner.url

    async def post(
        self, body: bytes | str | Any, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any], aiohttp.ClientResponse]:
        data = body if isinstance(body, bytes | str) else json.dumps(body)
        async with self.session.post(
            f"{self.url}/v1/events", data=data, headers=AUTH if headers is None else headers
        ) as response:
            payload = await response.json(content_type=None)
            return response.status, payload, response

    async def metric(self, name: str, labels: str = "") -> float:
        async with self.session.get(f"{self.url}/metrics") as response:
            text = await response.text()
        for line in text.splitlines():
            if line.startswith(f"{name}{labels} ") or (not labels and line.startswith(f"{name} ")):
                return float(line.split()[-1])
        return 0.0

    async def settled(self, condition: Callable[[], bool]) -> None:
        """Wait until the writer has done what ``condition`` checks (at most 10 s)."""
        deadline = asyncio.get_running_loop().time() + 10.0
        while not condition():
            assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
            await asyncio.sleep(0.01)


@asynccontextmanager
async def receiver(delay: float = 0.0, **ingest: Any) -> AsyncIterator[Receiver]:
    options: dict[str, Any] = {"host": "127.0.0.1", "token": SecretStr(TOKEN), "write_qps": 1000.0}
    options.update(ingest)
    settings = Settings(namespace=OPERATOR_NS, ingest=IngestSettings(**options))
    stores: list[FakeAlertStore] = []

    def make_store(throttle: Any, observe: Any) -> FakeAlertStore:
        stores.append(FakeAlertStore(throttle, observe, delay=delay))
        return stores[0]

    runner = await start_ingest(settings, make_store=make_store, port=0)
    try:
        async with aiohttp.ClientSession() as session:
            yield Receiver(runner, stores[0], session)
    finally:
        await runner.stop(flush_seconds=2.0)


async def test_single_event_is_acknowledged_and_written_to_its_namespace() -> None:
    async with receiver() as r:
        status, body, _ = await r.post(make_raw_event(namespace="payments"))
        assert status == 200
        assert body == {"accepted": 1, "aggregated": 0, "shed": 0}
        await r.settled(lambda: r.store.total() == 1)
        ((namespace, name),) = r.store.alerts
        assert namespace == "payments"
        assert name.startswith("terminal-shell-in-container-")


async def test_array_and_ndjson_bodies() -> None:
    events = [make_raw_event(pod=f"web-{i}") for i in range(3)]
    async with receiver() as r:
        assert (await r.post(events))[1]["accepted"] == 3
        ndjson = "\n".join(json.dumps(make_raw_event(pod=f"api-{i}")) for i in range(4)) + "\n"
        headers = AUTH | {"Content-Type": "application/x-ndjson"}
        assert (await r.post(ndjson, headers))[1]["accepted"] == 4
        await r.settled(lambda: r.store.total() == 7)
        assert len(r.store.alerts) == 7


async def test_every_sample_payload_is_accepted() -> None:
    async with receiver() as r:
        for path in sample_files():
            status, body, _ = await r.post(path.read_bytes())
            assert (status, body["accepted"]) == (200, 1), path
        await r.settled(lambda: r.store.total() == len(sample_files()))
        namespaces = {ns for ns, _ in r.store.alerts}
        assert {"shop", "payments", "ci", "tools", OPERATOR_NS} <= namespaces


async def test_repeats_aggregate_into_one_alert_with_an_exact_count() -> None:
    async with receiver(delay=0.002) as r:
        for batch in range(10):
            events = [make_raw_event(sidekick=True, uuid=f"{batch}-{i}") for i in range(100)]
            status, body, _ = await r.post(events)
            assert (status, body["accepted"]) == (200, 100)
        await r.settled(lambda: r.store.total() == 1000)
        assert len(r.store.alerts) == 1
        assert await r.metric("falco_triage_ingest_events_aggregated_total") >= 990


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "no credentials"),
        ({"Authorization": "Bearer wrong-token-0123456789"}, "wrong token"),
        ({"Authorization": f"Basic {TOKEN}"}, "wrong scheme"),
        ({"Authorization": "Bearer"}, "empty token"),
        ({"Authorization": f"Bearer {TOKEN}x"}, "token with a suffix"),
    ],
)
async def test_unauthenticated_requests_get_401_and_change_nothing(
    headers: dict[str, str], why: str
) -> None:
    async with receiver() as r:
        status, payload, response = await r.post(make_raw_event(), headers)
        assert status == 401, why
        assert payload["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert len(r.runner.queue) == 0
        assert await r.metric("falco_triage_ingest_events_accepted_total") == 0
        assert (
            await r.metric("falco_triage_ingest_requests_rejected_total", '{reason="unauthorized"}')
            == 1
        )
    assert r.store.alerts == {}


async def test_token_file_is_read_and_rotation_is_picked_up(
    tmp_path: Any, monkeypatch: Any
) -> None:
    import falco_triage.ingest.auth as auth

    monkeypatch.setattr(auth, "_RELOAD_CHECK_SECONDS", 0.0)
    token_file = tmp_path / "token"
    token_file.write_text("first-token-0123456789abcdef\n")
    async with receiver(token=None, token_file=token_file) as r:
        first = {"Authorization": "Bearer first-token-0123456789abcdef"}
        second = {"Authorization": "Bearer second-token-0123456789abcdef"}
        assert (await r.post(make_raw_event(), first))[0] == 200
        assert (await r.post(make_raw_event(), second))[0] == 401
        token_file.write_text("second-token-0123456789abcdef\nfirst-token-0123456789abcdef\n")
        import os

        os.utime(token_file, (1e9, 1e9))  # a different mtime, as a Secret update gives
        assert (await r.post(make_raw_event(), second))[0] == 200
        assert (await r.post(make_raw_event(), first))[0] == 200


async def test_auth_can_only_be_disabled_explicitly_and_it_warns(caplog: Any) -> None:
    from falco_triage.ingest.auth import AuthConfigError

    with pytest.raises(AuthConfigError, match="auth_disabled"):
        async with receiver(token=None):
            pass
    with caplog.at_level("WARNING"):
        async with receiver(token=None, auth_disabled=True) as r:
            assert (await r.post(make_raw_event(), headers={}))[0] == 200
    assert "AUTHENTICATION IS DISABLED" in caplog.text


def _deep(n: int) -> bytes:
    return b'{"rule": "x", "output_fields": ' + b'{"a": ' * n + b"1" + b"}" * n + b"}"


REJECTIONS = [
    (b"", 400, "empty_body"),
    (b"\xc3\x28", 400, "invalid_utf8"),
    (b"{not json", 400, "invalid_json"),
    (b"[1, 2, 3]", 400, "not_an_object"),
    (_deep(40), 400, "too_deep"),
    (json.dumps({"rule": "x"}).encode(), 400, "invalid_event"),
    (json.dumps(make_raw_event(priority="Urgent")).encode(), 400, "invalid_event"),
    (json.dumps([{"rule": "x"}] * 101).encode(), 413, "too_many_events"),
    (b" " * (64 * 1024 + 1), 413, "body_too_large"),
]


@pytest.mark.parametrize(("body", "status", "code"), REJECTIONS, ids=[r[2] for r in REJECTIONS])
async def test_rejections_are_4xx_json_and_change_nothing(
    body: bytes, status: int, code: str
) -> None:
    async with receiver(max_events_per_request=100, max_body_bytes=64 * 1024) as r:
        got, payload, response = await r.post(body)
        assert (got, payload["error"]["code"]) == (status, code)
        assert payload["error"]["message"]
        assert response.content_type == "application/json"
        assert len(r.runner.queue) == 0
        assert (
            await r.metric("falco_triage_ingest_requests_rejected_total", f'{{reason="{code}"}}')
            == 1
        )
    assert r.store.alerts == {}


async def test_one_bad_event_rejects_the_whole_batch_and_names_it() -> None:
    events = [make_raw_event(pod=f"p{i}") for i in range(5)]
    events[3]["priority"] = "Sometimes"
    async with receiver() as r:
        status, payload, _ = await r.post(events)
        assert status == 400
        assert payload["error"]["message"].startswith("event 3: priority")
        assert (
            await r.metric("falco_triage_ingest_events_rejected_total", '{reason="invalid_event"}')
            == 5
        )
    assert r.store.alerts == {}


async def test_declared_oversize_body_is_refused_before_it_is_sent() -> None:
    async with receiver(max_body_bytes=64 * 1024) as r:
        reader, writer = await asyncio.open_connection("127.0.0.1", r.runner.port)
        writer.write(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + TOKEN.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n"
        )
        await writer.drain()
        answer = (await asyncio.wait_for(reader.read(4096), 5)).decode()
        writer.close()
        assert answer.startswith("HTTP/1.1 413")
        assert "body_too_large" in answer


async def test_chunked_body_over_the_limit_is_413() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 4096

    async with (
        receiver(max_body_bytes=64 * 1024) as r,
        r.session.post(f"{r.url}/v1/events", data=chunks(), headers=AUTH) as response,
    ):
        assert response.status == 413
        assert (await response.json())["error"]["code"] == "body_too_large"


async def test_gzip_bodies_are_accepted_and_gzip_bombs_refused() -> None:
    # Falco's http_output can compress uploads (compress_uploads: true).
    gzip_headers = AUTH | {"Content-Encoding": "gzip"}
    async with receiver(max_body_bytes=64 * 1024) as r:
        body = gzip.compress(json.dumps(make_raw_event()).encode())
        status, payload, _ = await r.post(body, gzip_headers)
        assert (status, payload["accepted"]) == (200, 1)
        bomb = gzip.compress(b" " * (10 * 1024 * 1024))
        assert len(bomb) < 64 * 1024
        status, payload, _ = await r.post(bomb, gzip_headers)
        assert (status, payload["error"]["code"]) == (413, "body_too_large")
        assert "inflates" in payload["error"]["message"]
        status, payload, _ = await r.post(b"not gzip at all", gzip_headers)
        assert (status, payload["error"]["code"]) == (400, "invalid_body")
        assert await r.metric("falco_triage_ingest_events_accepted_total") == 1


async def test_long_values_are_truncated_not_rejected() -> None:
    async with receiver() as r:
        event = make_raw_event(output="o" * 100_000, **{"proc.cmdline": "c" * 100_000})
        assert (await r.post(event))[0] == 200
        await r.settled(lambda: r.store.total() == 1)
        (alert,) = r.store.alerts.values()
        assert len(alert["spec"].output) <= 8192
        assert "truncated" in alert["spec"].output_fields["proc.cmdline"]


async def test_secrets_never_reach_the_store() -> None:
    async with receiver() as r:
        event = make_raw_event(**{"proc.cmdline": "mysql -uroot -pTopSecret9 shop"})
        assert (await r.post(event))[0] == 200
        await r.settled(lambda: r.store.total() == 1)
        (alert,) = r.store.alerts.values()
        assert "TopSecret9" not in alert["spec"].model_dump_json()


async def test_fuzzed_payloads_never_cause_a_5xx() -> None:
    rng = random.Random(20240514)
    seeds = [path.read_bytes() for path in sample_files()]

    def mutate(data: bytes) -> bytes:
        choice = rng.randrange(6)
        if choice == 0:  # flip bytes
            raw = bytearray(data)
            for _ in range(rng.randrange(1, 8)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            return bytes(raw)
        if choice == 1:  # cut short
            return data[: rng.randrange(len(data))]
        doc = json.loads(data)
        key = rng.choice([*doc.keys(), "output_fields"])
        value = rng.choice(
            [None, 0, -1, 1.5, True, "", "x" * 9000, [], {}, [1, {"a": 2}], {"k": []}]
        )
        if choice == 2:
            doc[key] = value
        elif choice == 3 and isinstance(doc.get("output_fields"), dict):
            doc["output_fields"][rng.choice(list(doc["output_fields"]))] = value
        elif choice == 4:
            return json.dumps([doc, value]).encode()
        else:
            doc.pop(key, None)
        return json.dumps(doc).encode()

    async with receiver() as r:
        statuses: set[int] = set()
        for _ in range(400):
            status, payload, _ = await r.post(mutate(rng.choice(seeds)))
            statuses.add(status)
            assert status < 500, payload
            if status >= 400:
                assert payload["error"]["code"]
        assert {200, 400} <= statuses


async def test_a_full_buffer_sheds_low_priorities_and_says_so() -> None:
    async with receiver(delay=0.2, queue_capacity=10, write_workers=1) as r:
        lows = [make_raw_event(priority="Debug", pod=f"low-{i}") for i in range(12)]
        status, body, _ = await r.post(lows)
        assert status == 200
        assert body["shed"] >= 1
        critical = [make_raw_event(priority="Critical", pod=f"crit-{i}") for i in range(10)]
        status, body, _ = await r.post(critical)
        assert (status, body["shed"]) == (200, 0)  # Debug alerts made room
        more = [make_raw_event(priority="Notice", pod=f"n-{i}") for i in range(5)]
        status, body, response = await r.post(more)
        assert status == 503
        assert body["error"]["code"] == "buffer_full"
        assert response.headers["Retry-After"]
        shed_debug = await r.metric("falco_triage_ingest_events_shed_total", '{priority="Debug"}')
        shed_notice = await r.metric("falco_triage_ingest_events_shed_total", '{priority="Notice"}')
        assert shed_debug >= 10
        assert shed_notice == 5
        assert await r.metric("falco_triage_ingest_events_shed_total", '{priority="Critical"}') == 0
        async with r.session.get(f"{r.url}/readyz") as response:
            assert response.status == 503


async def test_nothing_is_acknowledged_once_shutdown_has_begun() -> None:
    # An open keep-alive connection can still send after the listener closed; the receiver
    # refuses (503) rather than acknowledge what it may not write before exiting.
    async with receiver(delay=0.3, write_workers=1) as r:
        assert (await r.post([make_raw_event(pod=f"p{i}") for i in range(3)]))[0] == 200
        stopping = asyncio.create_task(r.runner.stop(flush_seconds=5.0))
        await asyncio.sleep(0.05)
        status, payload, response = await r.post(make_raw_event(pod="late"))
        assert (status, payload["error"]["code"]) == (503, "shutting_down")
        assert response.headers["Retry-After"]
        assert await stopping == 0  # the three acknowledged before were written
        assert r.store.total() == 3


async def test_health_readiness_and_metrics() -> None:
    async with receiver() as r:
        async with r.session.get(f"{r.url}/healthz") as response:
            assert response.status == 200
        async with r.session.get(f"{r.url}/readyz") as response:
            assert (response.status, (await response.json())["status"]) == (200, "ready")
        await r.post(make_raw_event())
        await r.post(b"nope")
        await r.settled(lambda: r.store.total() == 1)
        assert await r.metric("falco_triage_ingest_events_received_total") == 1
        assert await r.metric("falco_triage_ingest_events_accepted_total") == 1
        assert await r.metric("falco_triage_ingest_requests_total", '{code="200"}') == 1
        assert await r.metric("falco_triage_ingest_requests_total", '{code="400"}') == 1
        assert await r.metric("falco_triage_ingest_request_duration_seconds_count") == 2
        await r.settled(lambda: r.runner.metrics.events_written._value.get() == 1)
        assert await r.metric("falco_triage_ingest_alerts_created_total") == 1
        assert await r.metric("falco_triage_ingest_api_requests_total", '{operation="create"}') == 1
        assert await r.metric("falco_triage_ingest_queue_capacity") == 10_000


async def test_wrong_method_and_path_are_4xx() -> None:
    async with receiver() as r:
        async with r.session.get(f"{r.url}/v1/events") as response:
            assert response.status == 405
        async with r.session.post(f"{r.url}/v2/events", headers=AUTH) as response:
            assert response.status == 404


async def _read_until_closed(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything the server sends until it closes the connection (fails after ``within``)."""
    return await asyncio.wait_for(reader.read(), within)


async def _read_answer(reader: asyncio.StreamReader, within: float) -> tuple[bytes, bytes]:
    """The head and body of one answer (fails after ``within``)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), within)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head, await asyncio.wait_for(reader.readexactly(length), within)


async def test_slow_clients_are_cut_off_and_others_still_served() -> None:
    head = f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
    async with receiver(header_timeout_seconds=0.3, body_timeout_seconds=0.5) as r:
        port = r.runner.port
        stalled_head = await asyncio.open_connection("127.0.0.1", port)
        stalled_head[1].write(head.encode()[:30])
        stalled_body = await asyncio.open_connection("127.0.0.1", port)
        stalled_body[1].write(f'{head}Content-Length: 100\r\n\r\n{{"rule": "Te'.encode())
        idle = await asyncio.open_connection("127.0.0.1", port)
        started = asyncio.get_running_loop().time()
        # Meanwhile everyone else is served as usual.
        assert (await r.post(make_raw_event()))[0] == 200
        # A head that never completes: the connection is closed, without an answer.
        assert await _read_until_closed(stalled_head[0], 3.0) == b""
        # A body that never completes: 408 body_timeout, and the connection is not kept.
        answer, body = await _read_answer(stalled_body[0], 3.0)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"Connection: close" in answer
        assert json.loads(body)["error"]["code"] == "body_timeout"
        # An idle keep-alive connection is closed after the head timeout too.
        assert await _read_until_closed(idle[0], 3.0) == b""
        assert asyncio.get_running_loop().time() - started < 3.0
        rejected = '{reason="body_timeout"}'
        assert await r.metric("falco_triage_ingest_requests_rejected_total", rejected) == 1
        for _, writer in (stalled_head, stalled_body, idle):
            writer.close()


async def test_a_body_that_arrives_in_time_is_accepted() -> None:
    body = json.dumps(make_raw_event()).encode()
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    async with receiver(body_timeout_seconds=2.0) as r:
        reader, writer = await asyncio.open_connection("127.0.0.1", r.runner.port)
        writer.write(head.encode() + body[:10])
        await asyncio.sleep(0.2)  # the rest comes later, well within the timeout
        writer.write(body[10:])
        status = await asyncio.wait_for(reader.readline(), 5.0)
        assert status.startswith(b"HTTP/1.1 200"), status
        writer.close()

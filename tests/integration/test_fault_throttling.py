"""API throttling: the receiver is answered 429 with Retry-After, keeps acknowledging within its
buffer, honours Retry-After, does not crash, and once the squeeze lifts every count is exact.

Two ways of throttling, because each proves something the other cannot:

- **The real API server's priority and fairness.** A FlowSchema sends every request of the
  receiver's ServiceAccount (the chart's receiver RBAC, nothing more) to a
  PriorityLevelConfiguration with no concurrency shares, nothing to borrow and ``Reject`` as the
  limit response (flowcontrol.apiserver.k8s.io/v1). Such a level runs one request at a time and
  answers every concurrent one 429 with Retry-After, which a receiver with eight write workers
  and hundreds of alerts to write gets whenever two of its writes overlap. Under that squeeze
  the receiver keeps
  answering 200 (nothing shed, ``/readyz`` ok); when the FlowSchema is deleted it catches up
  and every FalcoAlert counts exactly what was acknowledged.
- **A local proxy in front of the API server that injects 429 + ``Retry-After: 4``.** The API
  server chooses its own Retry-After (1 s, doubling while it keeps rejecting), too close to the
  writer's own backoff to tell them apart; with a fixed, longer value and every request
  timestamped at the proxy, the test checks that after each 429 no request comes before the
  Retry-After has passed.
"""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import ssl
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.controlplane import Cluster
from tests.support.load import (
    ReceiverAccount,
    ReceiverProcess,
    Sender,
    alert_counts,
    keyed,
    metric,
    post,
    receiver_account,
    run_senders,
)
from tests.support.processes import wait_for
from tests.unit.factories import make_raw_event

pytestmark = pytest.mark.slow

SQUEEZE_SECONDS = 20.0
SETTLE_SECONDS = 90.0
RETRY_AFTER = 4  # seconds: longer than the writer's own backoff after its first failures
INJECTED = 3
# A request already on its way when a 429 came back is not a retry of it.
IN_FLIGHT_GRACE = 0.25


# --------------------------------------------------------------------------------------------
# Priority and fairness
# --------------------------------------------------------------------------------------------


def squeeze(account: ReceiverAccount, name: str) -> list[dict[str, Any]]:
    """A FlowSchema routing the receiver's requests to a level that runs one at a time and
    rejects the rest with 429 (no queueing)."""
    return [
        {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "PriorityLevelConfiguration",
            "metadata": {"name": name},
            "spec": {
                "type": "Limited",
                "limited": {
                    # NB: no shares and nothing to borrow: a concurrency limit of zero, and
                    # APF still dispatches a request when none is executing, so one at a time.
                    "nominalConcurrencyShares": 0,
                    "lendablePercent": 0,
                    "borrowingLimitPercent": 0,
                    "limitResponse": {"type": "Reject"},
                },
            },
        },
        {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "FlowSchema",
            "metadata": {"name": name},
            "spec": {
                "priorityLevelConfiguration": {"name": name},
                # Ahead of every built-in schema but "exempt" (1).
                "matchingPrecedence": 50,
                "distinguisherMethod": {"type": "ByUser"},
                "rules": [
                    {
                        "subjects": [
                            {
                                "kind": "ServiceAccount",
                                "serviceAccount": {
                                    "name": account.service_account,
                                    "namespace": account.namespace,
                                },
                            }
                        ],
                        "resourceRules": [
                            {
                                "verbs": ["*"],
                                "apiGroups": ["*"],
                                "resources": ["*"],
                                "namespaces": ["*"],
                                "clusterScope": True,
                            }
                        ],
                    }
                ],
            },
        },
    ]


def _ca_pem(cluster: Cluster) -> str:
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    return base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"]).decode()


def _rejected_as(account: ReceiverAccount, cluster: Cluster, namespace: str) -> bool:
    """True once concurrent requests as the receiver's ServiceAccount get 429.

    NB: raw requests, not kubectl: client-go retries 429s on its own, so kubectl never shows
    them; and separate kubectl processes start too slowly to overlap on the server.
    """
    parsed = urllib.parse.urlsplit(cluster.server)
    context = ssl.create_default_context(cadata=_ca_pem(cluster))
    path = f"/apis/falcotriage.io/v1alpha1/namespaces/{namespace}/falcoalerts/absent"
    statuses: list[int] = []

    def probe() -> None:
        connection = http.client.HTTPSConnection(
            parsed.hostname or "127.0.0.1", parsed.port or 443, context=context, timeout=10
        )
        try:
            for _ in range(10):
                connection.request(
                    "GET", path, headers={"Authorization": f"Bearer {account.token}"}
                )
                response = connection.getresponse()
                response.read()
                statuses.append(response.status)
        finally:
            connection.close()

    threads = [threading.Thread(target=probe) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return 429 in statuses


def _written_all(receiver: ReceiverProcess) -> dict[str, float] | None:
    """The receiver's metrics once it counts every event it took as written.

    NB: a write shows in the API a moment before the receiver counts it in its metrics (the
    count moves when the worker thread's answer is back on the event loop), and one write can
    carry dozens of coalesced events: reading the metrics right after the counts in the API
    match can see them short by a whole write.
    """
    values = receiver.metrics()
    written = metric(values, "events_written_total")
    return values if written == metric(values, "events_accepted_total") else None


def _throttled(values: dict[str, float]) -> float:
    """API requests answered 429. NB: the reason label is the Status body's ``reason`` when
    there is one ("TooManyRequests"), else the HTTP reason phrase: priority and fairness sends
    its 429 Status without a ``reason``."""
    return sum(
        metric(values, "api_errors_total", reason=reason)
        for reason in ("TooManyRequests", "Too Many Requests")
    )


def test_squeezed_by_priority_and_fairness_the_receiver_acknowledges_and_stays_exact(
    control_plane: Cluster, namespace: str
) -> None:
    own = f"{namespace}-op"
    control_plane.kubectl("create", "namespace", own)
    name = f"ft-squeeze-{uuid.uuid4().hex[:8]}"
    events = keyed([make_raw_event(namespace=namespace, pod=f"web-{i}") for i in range(300)], own)
    settings = {"write_qps": 200, "write_burst": 100, "write_workers": 8}
    try:
        with (
            receiver_account(control_plane) as account,
            ReceiverProcess(account.kubeconfig, own, settings=settings) as receiver,
        ):
            control_plane.kubectl(
                "apply", "-f", "-", input=yaml.safe_dump_all(squeeze(account, name))
            )
            try:
                wait_for(
                    lambda: _rejected_as(account, control_plane, namespace),
                    timeout=30,
                    what="the API server to throttle the receiver's ServiceAccount",
                    interval=0.5,
                )
                # 250 events/s: 300 distinct alerts in batches of 5, each repeated ~16 times.
                sender = Sender(
                    receiver.port, events, rate=250, seconds=SQUEEZE_SECONDS, batch=5, shuffle=True
                )
                run_senders([sender], timeout=SQUEEZE_SECONDS + 30)
                squeezed = receiver.metrics()
                ready = post(receiver.port, b"", method="GET", path="/readyz", token=None)
            finally:
                control_plane.kubectl("delete", "flowschema,prioritylevelconfiguration", name,
                                      "--ignore-not-found")  # fmt: skip

            # The squeeze was real, and the receiver kept taking everything all along.
            throttled = _throttled(squeezed)
            assert throttled > 0, "no 429 reached the receiver"
            assert set(sender.tally.statuses) == {200}, sender.tally.statuses
            assert sender.tally.shed == 0
            assert sender.tally.errors == []
            assert ready.status == 200, ready.body
            assert metric(squeezed, "events_written_total") < sender.tally.accepted, (
                "the receiver wrote everything during the squeeze: it proved nothing"
            )
            assert receiver.alive()

            # Lifted: it catches up, exactly.
            wait_for(
                lambda: alert_counts(control_plane, [namespace]) == dict(sender.tally.acked),
                timeout=SETTLE_SECONDS,
                what="every acknowledged event counted once the squeeze lifted",
                interval=1.0,
            )
            final = wait_for(
                lambda: _written_all(receiver),
                timeout=SETTLE_SECONDS,
                what="the receiver to count every event it took as written",
            )
            log = receiver.log(2000)
    finally:
        control_plane.kubectl("delete", "namespace", own, "--wait=false", check=False)
    assert metric(final, "events_written_total") == sender.tally.accepted
    assert metric(final, "events_dropped_total") == 0
    assert len(sender.tally.acked) == len(events)  # every alert was sent, and so exists
    assert "Traceback" not in log
    print(  # shown with -s: how hard it was squeezed
        f"squeeze: {sender.tally.accepted} events acknowledged, {throttled:.0f} API requests "
        f"throttled, {metric(squeezed, 'events_written_total'):.0f} events written meanwhile"
    )


# --------------------------------------------------------------------------------------------
# A proxy that injects 429 + Retry-After
# --------------------------------------------------------------------------------------------


@dataclass
class Seen:
    """A request the proxy got: when it arrived, and when (and how) it was answered."""

    arrived: float
    answered: float
    method: str
    path: str
    status: int
    injected: bool


class ThrottlingProxy(http.server.ThreadingHTTPServer):
    """Plain HTTP on 127.0.0.1 in front of the API server's HTTPS, forwarding every request
    with its headers (the bearer token included); :meth:`inject` makes the next ``n`` answers
    429 with ``Retry-After``."""

    daemon_threads = True

    def __init__(self, upstream: str, ca_pem: str) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream_host = parsed.hostname or "127.0.0.1"
        self.upstream_port = parsed.port or 443
        self.context = ssl.create_default_context(cadata=ca_pem)
        self.lock = threading.Lock()
        self.seen: list[Seen] = []
        self._to_inject = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def inject(self, n: int) -> None:
        with self.lock:
            self._to_inject = n

    def take_injection(self) -> bool:
        with self.lock:
            if self._to_inject > 0:
                self._to_inject -= 1
                return True
            return False

    def record(self, seen: Seen) -> None:
        with self.lock:
            self.seen.append(seen)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the kubernetes client expects
    server: ThrottlingProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet

    def _handle(self) -> None:
        arrived = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.server.take_injection():
            status = 429
            payload = json.dumps(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": "too many requests (injected by the test proxy)",
                    "reason": "TooManyRequests",
                    "code": 429,
                }
            ).encode()
            self.send_response(status)
            self.send_header("Retry-After", str(RETRY_AFTER))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            injected = True
        else:
            status = self._forward(body)
            injected = False
        self.server.record(
            Seen(arrived, time.monotonic(), self.command, self.path, status, injected)
        )

    def _forward(self, body: bytes) -> int:
        upstream = http.client.HTTPSConnection(
            self.server.upstream_host,
            self.server.upstream_port,
            context=self.server.context,
            timeout=30,
        )
        hop = {"connection", "keep-alive", "transfer-encoding", "host", "content-length"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
        try:
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
        finally:
            upstream.close()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in hop:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        return response.status

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle


@contextmanager
def throttling_proxy(cluster: Cluster) -> Iterator[ThrottlingProxy]:
    proxy = ThrottlingProxy(cluster.server, _ca_pem(cluster))
    thread = threading.Thread(target=proxy.serve_forever, name="throttling-proxy", daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(10)


def _kubeconfig_through(proxy: ThrottlingProxy, token: str, path: Path) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "proxy", "cluster": {"server": proxy.url}}],
        "users": [{"name": "receiver", "user": {"token": token}}],
        "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "receiver"}}],
        "current-context": "proxy",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def test_retry_after_is_honoured(control_plane: Cluster, namespace: str, tmp_path: Path) -> None:
    own = f"{namespace}-op"
    control_plane.kubectl("create", "namespace", own)
    first, second = (make_raw_event(namespace=namespace, pod=f"api-{i}") for i in range(2))
    (first_pair,) = keyed([first], own)
    both = keyed([first, second], own)
    try:
        with (
            receiver_account(control_plane) as account,
            throttling_proxy(control_plane) as proxy,
            ReceiverProcess(
                _kubeconfig_through(proxy, account.token, tmp_path / "proxy.kubeconfig"), own
            ) as receiver,
        ):
            # Through the proxy, unthrottled: the first alert is written.
            warmup = Sender(receiver.port, [first_pair], rate=10, seconds=5, max_requests=1)
            run_senders([warmup], timeout=10)
            wait_for(
                lambda: alert_counts(control_plane, [namespace]) == {first_pair[1]: 1},
                timeout=30,
                what="the first alert, written through the proxy",
            )
            proxy.inject(INJECTED)
            armed = time.monotonic()
            sender = Sender(receiver.port, both, rate=20, seconds=6)
            run_senders([sender], timeout=20)
            assert set(sender.tally.statuses) == {200}  # acknowledged while throttled
            expected = sender.tally.acked.copy()
            expected.update(warmup.tally.acked)
            wait_for(
                lambda: alert_counts(control_plane, [namespace]) == dict(expected),
                timeout=SETTLE_SECONDS,
                what="exact counts after the 429s",
                interval=0.5,
            )
            seen = [s for s in proxy.seen if s.arrived >= armed]
            final = wait_for(
                lambda: _written_all(receiver),
                timeout=SETTLE_SECONDS,
                what="the receiver to count every event it took as written",
            )
    finally:
        control_plane.kubectl("delete", "namespace", own, "--wait=false", check=False)

    injected = [s for s in seen if s.injected]
    assert len(injected) == INJECTED
    assert _throttled(final) == INJECTED
    # After each 429 the receiver waited the Retry-After before its next request (a request
    # that arrived within IN_FLIGHT_GRACE of the answer was already on its way).
    for rejected in injected:
        too_soon = [
            s
            for s in seen
            if rejected.answered + IN_FLIGHT_GRACE
            < s.arrived
            < rejected.answered + RETRY_AFTER - 0.1
        ]
        assert not too_soon, (
            f"requests {[(round(s.arrived - rejected.answered, 2), s.method) for s in too_soon]} "
            f"s after a 429 with Retry-After {RETRY_AFTER}"
        )
    # ... and then went on: the last 429 is followed by successful writes.
    last = max(s.answered for s in injected)
    after = [s for s in seen if s.arrived > last]
    assert after, "no request after the last 429"
    assert min(s.arrived for s in after) - last >= RETRY_AFTER - 0.1
    # (409 AlreadyExists is create-or-get finding the alert it had written before.)
    assert all(s.status != 429 and s.status < 500 for s in after), [
        (s.method, s.status) for s in after
    ]
    assert metric(final, "events_written_total") == metric(final, "events_accepted_total")

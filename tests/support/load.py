"""Plumbing for the fault tests and benchmarks: receivers as real processes with the chart's
receiver RBAC, HTTP senders that count exactly what was acknowledged, and readers of FalcoAlerts
and of the receiver's metrics.

Everything talks to 127.0.0.1 only, and every loop here is bounded in count and in time::

    with receiver_account(cluster) as account:
        with ReceiverProcess(account.kubeconfig, operator_ns) as receiver:
            sender = Sender(receiver.port, keyed(events, operator_ns), rate=50, seconds=10)
            run_senders([sender], timeout=30)
            wait_for(lambda: alert_counts(cluster, [ns]) == dict(sender.tally.acked), ...)

Only the standard library, PyYAML and the package itself are imported (no pytest), so the
benchmarks use it too.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from falco_triage.events.fingerprint import alert_name, alert_spec
from falco_triage.events.normalize import normalize_event
from falco_triage.events.parse import Limits
from tests.support.controlplane import Cluster
from tests.support.processes import Service, free_port

REPO = Path(__file__).resolve().parents[2]
RECEIVER_RBAC = REPO / "charts" / "falco-triage" / "templates" / "rbac-receiver.yaml"
TOKEN = "falco-triage-fault-token-0123456789abcdef"
EVENTS_PATH = "/v1/events"
METRIC_PREFIX = "falco_triage_ingest_"

AlertKey = tuple[str, str]
"""(namespace, name) of a FalcoAlert."""


# --------------------------------------------------------------------------------------------
# Who the receiver runs as: the chart's receiver ClusterRole, nothing more
# --------------------------------------------------------------------------------------------


def chart_receiver_rules() -> list[dict[str, Any]]:
    """The receiver ClusterRole's rules, read from the chart template (template lines dropped)."""
    text = RECEIVER_RBAC.read_text().split("\n---", 1)[0]
    plain = "\n".join(line for line in text.splitlines() if "{{" not in line)
    rules: list[dict[str, Any]] = yaml.safe_load(plain)["rules"]
    return rules


@dataclass(frozen=True)
class ReceiverAccount:
    """A ServiceAccount bound to the chart's receiver rules, and a kubeconfig acting as it."""

    namespace: str
    service_account: str
    role: str
    token: str
    kubeconfig: Path

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


@contextmanager
def receiver_account(cluster: Cluster, prefix: str = "ft-recv") -> Iterator[ReceiverAccount]:
    """A namespace with a ``receiver`` ServiceAccount bound to exactly the chart's receiver
    ClusterRole; everything is deleted afterwards."""
    suffix = uuid.uuid4().hex[:8]
    namespace, role = f"{prefix}-{suffix}", f"falco-triage-receiver-{suffix}"
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("create", "serviceaccount", "receiver", "-n", namespace)
    objects = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": role},
            "rules": chart_receiver_rules(),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": role},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"kind": "ServiceAccount", "name": "receiver", "namespace": namespace}],
        },
    ]
    try:
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
        token = cluster.create_token(namespace, "receiver")
        kubeconfig = cluster.kubeconfig_for_token(token, f"receiver-{suffix}")
        yield ReceiverAccount(namespace, "receiver", role, token, kubeconfig)
    finally:
        cluster.kubectl(
            "delete", "clusterrolebinding,clusterrole", role, "--ignore-not-found", check=False
        )
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


# --------------------------------------------------------------------------------------------
# `falco-triage ingest` as its own process
# --------------------------------------------------------------------------------------------


class ReceiverProcess(Service):
    """``falco-triage ingest`` on a free loopback port; ``base_url`` once started."""

    def __init__(
        self,
        kubeconfig: Path,
        namespace: str,
        *,
        name: str = "ingest",
        token: str = TOKEN,
        settings: Mapping[str, str | float | int] | None = None,
    ) -> None:
        """``settings`` are ingest settings by field name (``write_qps``: 50, ...)."""
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.token = token
        env = {
            "KUBECONFIG": str(kubeconfig),
            "PYTHONUNBUFFERED": "1",
            "FALCO_TRIAGE_NAMESPACE": namespace,
            "FALCO_TRIAGE_INGEST__HOST": "127.0.0.1",
            "FALCO_TRIAGE_INGEST__TOKEN": token,
            **{f"FALCO_TRIAGE_INGEST__{k.upper()}": str(v) for k, v in (settings or {}).items()},
        }
        super().__init__(
            name, ["ingest", "--port", str(self.port)], env, f"{self.base_url}/healthz"
        )

    def metrics(self) -> dict[str, float]:
        """The receiver's ``/metrics``, by full sample name (labels included)."""
        return scrape_metrics(self.port)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def scrape_metrics(port: int, timeout: float = 10.0) -> dict[str, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            sample, _, value = line.rpartition(" ")
            values[sample] = float(value)
    return values


def metric(values: Mapping[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of ``falco_triage_ingest_<name>`` whose labels include ``labels``."""
    full = METRIC_PREFIX + name
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    found = 0.0
    for sample, value in values.items():
        base, _, rest = sample.partition("{")
        if base == full and all(w in rest for w in wanted):
            found += value
    return found


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def post(
    port: int,
    body: bytes,
    *,
    token: str | None = TOKEN,
    headers: Mapping[str, str] | None = None,
    path: str = EVENTS_PATH,
    method: str = "POST",
    chunked: bool = False,
    timeout: float = 30.0,
) -> Answer:
    """One request on a fresh connection; ``token=None`` sends no Authorization header.

    NB: raw sockets, not http.client: a server may answer (413) and close before the whole
    body is sent, and http.client then loses the answer to the broken pipe.
    """
    sent = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json"}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    sent.update(headers or {})
    if chunked:
        sent["Transfer-Encoding"] = "chunked"
        step = 256 * 1024
        pieces = [
            f"{len(body[i : i + step]):x}\r\n".encode() + body[i : i + step] + b"\r\n"
            for i in range(0, len(body), step)
        ]
        payload = b"".join(pieces) + b"0\r\n\r\n"
    else:
        sent["Content-Length"] = str(len(body))
        payload = body
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in sent.items())
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(head.encode() + b"\r\n")
            for start in range(0, len(payload), 64 * 1024):
                sock.sendall(payload[start : start + 64 * 1024])
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered early and closed: read the answer below
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        return Answer(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )


# --------------------------------------------------------------------------------------------
# Events and where they land
# --------------------------------------------------------------------------------------------


def expected_key(raw: Mapping[str, Any], default_namespace: str) -> AlertKey:
    """The FalcoAlert a raw event is counted into, as the receiver names it."""
    spec = alert_spec(normalize_event(raw, Limits()), default_namespace)
    return spec.target.namespace or default_namespace, alert_name(spec)


def list_alerts(cluster: Cluster, namespaces: Sequence[str]) -> dict[AlertKey, dict[str, Any]]:
    """Every FalcoAlert in ``namespaces`` by (namespace, name)."""
    out = cluster.kubectl("get", "falcoalerts", "-A", "-o", "json").stdout
    wanted = set(namespaces)
    return {
        (i["metadata"]["namespace"], i["metadata"]["name"]): i
        for i in json.loads(out)["items"]
        if i["metadata"]["namespace"] in wanted
    }


def occurrence_count(alert: Mapping[str, Any]) -> int:
    return int(((alert.get("status") or {}).get("occurrences") or {}).get("count") or 0)


def alert_counts(cluster: Cluster, namespaces: Sequence[str]) -> dict[AlertKey, int]:
    return {key: occurrence_count(a) for key, a in list_alerts(cluster, namespaces).items()}


# --------------------------------------------------------------------------------------------
# Senders
# --------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What a sender saw: events acknowledged (in total and per alert), shed at once, HTTP
    statuses, connection errors and request latencies.

    ``accepted`` sums the answers' ``accepted``; ``acked`` splits it per alert, which is exact
    only while nothing was shed at once (``shed == 0``): an answer says how many of its events
    were shed, not which.
    """

    accepted: int = 0
    shed: int = 0
    acked: Counter[AlertKey] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


class Sender(threading.Thread):
    """POSTs events over one keep-alive connection at a bounded rate, for a bounded time.

    ``events`` is a list of (raw event, alert key) pairs, sent round-robin (``shuffle`` picks
    at random instead). ``batch`` events go in each request (a JSON array when above one). The
    thread stops after ``seconds`` or ``max_requests``, or when :meth:`stop` is called; what was
    acknowledged is in ``tally``. A connection error is recorded and the connection reopened
    (no request is retried: an unanswered request was not acknowledged).
    """

    def __init__(
        self,
        port: int,
        events: Sequence[tuple[dict[str, Any], AlertKey]],
        *,
        rate: float,
        seconds: float,
        batch: int = 1,
        token: str = TOKEN,
        max_requests: int = 1_000_000,
        shuffle: bool = False,
        seed: int = 0,
        name: str = "sender",
    ) -> None:
        super().__init__(name=name, daemon=True)
        if not events:
            raise ValueError("a sender needs events")
        self.port = port
        self.events = list(events)
        self.rate = rate
        self.seconds = seconds
        self.batch = batch
        self.token = token
        self.max_requests = max_requests
        self.shuffle = shuffle
        self.tally = Tally()
        self._random = random.Random(seed)
        self._stop_event = threading.Event()
        self._lock = threading.Lock()

    def stop(self) -> None:
        self._stop_event.set()

    def snapshot(self) -> tuple[int, int]:
        """(accepted, shed at once) so far, read consistently."""
        with self._lock:
            return self.tally.accepted, self.tally.shed

    def run(self) -> None:
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/json",
        }
        connection: http.client.HTTPConnection | None = None
        interval = self.batch / self.rate
        started = time.monotonic()
        deadline = started + self.seconds
        index = 0
        for sent in range(self.max_requests):
            due = started + sent * interval
            now = time.monotonic()
            if now >= deadline or self._stop_event.is_set():
                break
            if due > now and self._stop_event.wait(due - now):
                break
            chosen = [self._pick(index + k) for k in range(self.batch)]
            index += self.batch
            body = json.dumps(
                chosen[0][0] if self.batch == 1 else [raw for raw, _ in chosen]
            ).encode()
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                began = time.perf_counter()
                connection.request("POST", EVENTS_PATH, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                took = time.perf_counter() - began
            except (OSError, http.client.HTTPException) as exc:
                with self._lock:
                    self.tally.errors.append(f"{type(exc).__name__}: {exc}")
                if connection is not None:
                    connection.close()
                connection = None
                continue
            self._count(response.status, payload, chosen, took)
        if connection is not None:
            connection.close()

    def _pick(self, index: int) -> tuple[dict[str, Any], AlertKey]:
        if self.shuffle:
            return self._random.choice(self.events)
        return self.events[index % len(self.events)]

    def _count(
        self,
        status: int,
        payload: bytes,
        chosen: list[tuple[dict[str, Any], AlertKey]],
        took: float,
    ) -> None:
        with self._lock:
            self.tally.statuses[status] += 1
            self.tally.latencies.append(took)
            if status != 200:
                return
            answer = json.loads(payload)
            self.tally.accepted += answer["accepted"]
            self.tally.shed += answer["shed"]
            if answer["shed"] == 0:
                for _, key in chosen:
                    self.tally.acked[key] += 1


def keyed(events: Sequence[dict[str, Any]], default_namespace: str) -> list[tuple[Any, AlertKey]]:
    """Pair each raw event with the FalcoAlert it is counted into."""
    return [(raw, expected_key(raw, default_namespace)) for raw in events]


def run_senders(senders: Sequence[Sender], timeout: float) -> None:
    """Start the senders and wait for all of them (each is bounded by its own ``seconds``)."""
    for sender in senders:
        sender.start()
    deadline = time.monotonic() + timeout
    for sender in senders:
        sender.join(max(deadline - time.monotonic(), 0.1))
        if sender.is_alive():
            sender.stop()
            sender.join(10)

"""Benchmark the receiver: accepted events/s, ack latency, and API writes/s.

    python bench/ingest.py                       # against the real test control plane
    python bench/ingest.py --api simulated       # no cluster: a store that sleeps like an API

The receiver runs in its own process (``start_ingest``, default settings: 20 writes/s, burst
40) on the event loop ``falco-triage ingest`` uses (uvloop where installed), so it has one core
and the load generator the other. The load generator is deliberately thin so it measures the
receiver, not itself, and leaves it the CPU on a machine with few cores: requests built in
advance, raw keep-alive HTTP/1.1 on an asyncio protocol of its own (no stream reader), answers
parsed once per distinct body, on the same event loop. Traffic is 127.0.0.1 only, and every
phase is bounded in time.

Events are real-looking Falco and Falcosidekick events for the 25 sample rules
(``tests/data/events``), each on 20 different pods, hosts or API objects (481 distinct alerts),
every one repeated with its own time, uuid and output timestamp, as a noisy cluster sends them.

Phases: warm-up; single-event POSTs from 16 concurrent keep-alive senders; batched POSTs
(arrays of ``--batch`` events from 4 senders). For each: accepted events/s, ack latency
p50/p99 (client-side, send to full response), API requests/s read from the receiver's
``/metrics``. Results go to ``bench/results/ingest.json`` with the machine they ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "operator")]

TOKEN = "bench-token-0123456789abcdef0123"
OPERATOR_NS = "falco-triage-bench"
APP_NS = "bench"
TARGETS = {
    "single_events_per_second": 5000,
    "batched_events_per_second": 50000,
    "ack_p99_ms": 20.0,
}


# --------------------------------------------------------------------------------------------
# The receiver, in its own process
# --------------------------------------------------------------------------------------------


def serve(api: str, kubeconfig: str | None, latency: float, ready: Any) -> None:
    """Child process: run the receiver until terminated; report the port through ``ready``."""
    import logging
    import signal

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    from pydantic import SecretStr
    from tests.unit.factories import FakeAlertStore

    from falco_triage.ingest.server import run_event_loop, start_ingest
    from falco_triage.k8s.client import new_api_client
    from falco_triage.settings import IngestSettings, Settings

    settings = Settings(
        namespace=OPERATOR_NS,
        ingest=IngestSettings(
            host="127.0.0.1", token=SecretStr(TOKEN), max_events_per_request=10_000
        ),
    )

    async def main() -> None:
        if api == "simulated":
            runner = await start_ingest(
                settings, make_store=lambda t, o: FakeAlertStore(t, o, delay=latency), port=0
            )
        else:
            client = new_api_client(Path(kubeconfig or ""), pool_size=settings.ingest.write_workers)
            runner = await start_ingest(settings, api=client, port=0)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        ready.send(runner.port)
        await stop.wait()
        await runner.stop(flush_seconds=5.0)

    run_event_loop(main())


# --------------------------------------------------------------------------------------------
# Load generation
# --------------------------------------------------------------------------------------------


def build_events(count: int) -> list[dict[str, Any]]:
    """``count`` events: 25 rules x 20 pods = 500 alerts, each occurrence with its own time."""
    from tests.unit.factories import make_raw_event, sample_files

    rules = [json.loads(p.read_bytes()) for p in sample_files()]
    base = datetime(2024, 5, 14, 9, 0, tzinfo=UTC)
    events = []
    for i in range(count):
        sample = rules[i % len(rules)]
        variant = (i // len(rules)) % 20  # which of the 20 workloads (or hosts, or objects)
        fields = {k: v for k, v in sample["output_fields"].items() if not k.startswith("k8s.")}
        host = sample["source"] == "syscall" and sample["output_fields"].get("k8s.ns.name") is None
        if sample["source"] == "k8s_audit":
            for key in ("ka.target.name", "ka.resp.name", "ka.req.configmap.name"):
                if key in fields:
                    fields[key] = f"{fields[key]}-{variant}"
        event = make_raw_event(
            sample["rule"],
            namespace=APP_NS,
            pod=f"{sample['output_fields'].get('k8s.pod.name') or 'pod'}-{variant}",
            host=host,
            at=base + timedelta(milliseconds=i),
            hostname=f"{sample['hostname']}-{variant}" if host else sample["hostname"],
            sidekick="uuid" in sample,
            **fields,
        )
        if "uuid" in event:
            event["uuid"] = f"{i:08x}-0000-4000-8000-{i:012x}"
        events.append(event)
    return events


def distinct_alerts(events: list[dict[str, Any]]) -> int:
    """How many FalcoAlerts the events make (per aggregation window), as the receiver names them."""
    from falco_triage.events.fingerprint import alert_name, alert_spec
    from falco_triage.events.normalize import normalize_event
    from falco_triage.events.parse import Limits

    specs = [alert_spec(normalize_event(e, Limits()), OPERATOR_NS) for e in events]
    return len({(s.target.namespace, alert_name(s)) for s in specs})


def request(body: bytes) -> bytes:
    head = (
        "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Phase:
    name: str
    events_per_request: int
    requests: int = 0
    events: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    api_requests: float = 0.0
    shed: float = 0.0
    server_cpu: float = 0.0
    sender_cpu: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 3) if lat else 0.0

        per_second = self.seconds or 1.0
        return {
            "seconds": round(self.seconds, 2),
            "requests": self.requests,
            "events_accepted": self.events,
            "errors": self.errors,
            "events_per_second": round(self.events / per_second),
            "requests_per_second": round(self.requests / per_second),
            "ack_ms": {
                "p50": pct(0.50),
                "p90": pct(0.90),
                "p99": pct(0.99),
                "max": pct(1.0),
                "mean": round(statistics.fmean(lat) * 1000, 3) if lat else 0.0,
            },
            "api_requests_per_second": round(self.api_requests / per_second, 2),
            "events_shed": self.shed,
            # Contention-proof: what the receiver process itself spent, whoever else ran.
            "receiver_cpu_share": round(self.server_cpu / per_second, 2),
            "receiver_cpu_us_per_event": round(self.server_cpu / max(self.events, 1) * 1e6, 1),
            "events_per_receiver_cpu_second": round(self.events / self.server_cpu)
            if self.server_cpu
            else 0,
            # What the load generator itself spent per request (it shares the machine).
            "sender_cpu_us_per_request": round(self.sender_cpu / max(self.requests, 1) * 1e6, 1),
            "load_average_1m": [round(x, 2) for x in self.load],
        }


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time: :meth:`send` returns the
    answer's status line and body. (A protocol, not a stream reader: on two cores the load
    generator's CPU is the receiver's loss.)"""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._answer: asyncio.Future[tuple[bool, bytes]] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        answer = self._answer
        if answer is None or answer.done():
            return
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buffer[:end]).lower()
        length = 0
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop >= 0 else None])
        if len(self._buffer) < end + 4 + length:
            return
        body = bytes(self._buffer[end + 4 : end + 4 + length])
        del self._buffer[: end + 4 + length]
        answer.set_result((head.startswith(b"http/1.1 200"), body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc or ConnectionResetError("connection closed"))

    async def send(self, payload: bytes) -> tuple[bool, bytes]:
        assert self.transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return await self._answer


_ACCEPTED: dict[bytes, int] = {}  # answer body -> its "accepted": a handful of distinct bodies


def accepted(answer: bytes) -> int:
    count = _ACCEPTED.get(answer)
    if count is None:
        count = json.loads(answer)["accepted"]
        if len(_ACCEPTED) < 10_000:
            _ACCEPTED[answer] = count
    return count


async def sender(port: int, bodies: list[bytes], start: int, phase: Phase, until: float) -> None:
    loop = asyncio.get_running_loop()
    transport, connection = await loop.create_connection(Connection, "127.0.0.1", port)
    i = start
    clock = time.perf_counter
    try:
        while clock() < until:
            payload = bodies[i % len(bodies)]
            i += 1
            sent = clock()
            ok, answer = await connection.send(payload)
            phase.latencies.append(clock() - sent)
            phase.requests += 1
            if ok:
                phase.events += accepted(answer)
            else:
                phase.errors += 1
    finally:
        transport.close()


async def metrics(port: int) -> dict[str, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    text = (await reader.read()).decode()
    writer.close()
    values: dict[str, float] = {}
    for line in text.split("\r\n\r\n", 1)[1].splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def total(values: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in values.items() if k.startswith(prefix))


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_phase(
    port: int, phase: Phase, bodies: list[bytes], senders: int, seconds: float, server_pid: int
) -> None:
    before = await metrics(port)
    cpu_before = cpu_seconds(server_pid)
    sender_before = os.times()
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    until = started + seconds
    step = max(len(bodies) // senders, 1)
    await asyncio.gather(*(sender(port, bodies, k * step, phase, until) for k in range(senders)))
    phase.seconds = time.perf_counter() - started
    phase.server_cpu = cpu_seconds(server_pid) - cpu_before
    sender_after = os.times()
    phase.sender_cpu = (sender_after.user + sender_after.system) - (
        sender_before.user + sender_before.system
    )
    phase.load = (load_before, os.getloadavg()[0])
    after = await metrics(port)
    phase.api_requests = total(after, "falco_triage_ingest_api_requests_total") - total(
        before, "falco_triage_ingest_api_requests_total"
    )
    phase.shed = total(after, "falco_triage_ingest_events_shed_total") - total(
        before, "falco_triage_ingest_events_shed_total"
    )


async def drain(port: int, within: float) -> dict[str, float]:
    """Wait (bounded) until every accepted event is written or accounted for; the counters."""
    deadline = time.monotonic() + within
    while True:
        values = await metrics(port)
        settled = (
            values.get("falco_triage_ingest_events_written_total", 0)
            + total(values, "falco_triage_ingest_events_shed_total")
            + total(values, "falco_triage_ingest_events_dropped_total")
        )
        if settled >= values.get("falco_triage_ingest_events_accepted_total", 0):
            return values
        if time.monotonic() > deadline:
            return values
        await asyncio.sleep(0.5)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def start_control_plane(stack: Any) -> Path:
    """The test control plane with the CRDs, as the integration tests use it."""
    from tests.support.controlplane import control_plane_from_env

    cluster = stack.enter_context(control_plane_from_env(REPO))
    cluster.apply_file(REPO / "crds")
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    for ns in (APP_NS, OPERATOR_NS):
        cluster.kubectl("create", "namespace", ns)
    return Path(cluster.kubeconfig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", choices=["controlplane", "simulated"], default="controlplane")
    parser.add_argument("--latency-ms", type=float, default=5.0, help="simulated API latency")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "ingest.json")
    args = parser.parse_args()

    import contextlib

    from falco_triage.ingest.server import run_event_loop

    print("building events ...", flush=True)
    events = build_events(20_000)
    alerts = distinct_alerts(events)
    singles = [request(json.dumps(e).encode()) for e in events]
    batches = [
        request(json.dumps(events[i : i + args.batch]).encode())
        for i in range(0, len(events) - args.batch + 1, args.batch)
    ]
    with contextlib.ExitStack() as stack:
        kubeconfig = None
        if args.api == "controlplane":
            print("starting the control plane ...", flush=True)
            kubeconfig = str(start_control_plane(stack))
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        server = ctx.Process(
            target=serve, args=(args.api, kubeconfig, args.latency_ms / 1000, child)
        )
        server.start()
        try:
            if not parent.poll(60):
                raise SystemExit("receiver did not start within 60 s")
            port = int(parent.recv())
            assert server.pid is not None
            results = run_event_loop(measure(port, server.pid, singles, batches, args))
        finally:
            server.terminate()
            server.join(30)
    record = {
        "benchmark": "ingest",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "machine": machine(),
        "config": {
            "api": "kube-apiserver + etcd of tests/controlplane, on this machine"
            if args.api == "controlplane"
            else f"simulated ({args.latency_ms} ms per request)",
            "receiver": "defaults: write_qps 20, write_burst 40, write_workers 4, queue 10000",
            "event_loop": _event_loop(),
            "phase_seconds": args.seconds,
            "single_senders": args.senders,
            "batch_size": args.batch,
            "batch_senders": 4,
            "distinct_alerts": alerts,
            "events_prepared": len(events),
        },
        "results": results,
        "targets": TARGETS,
    }
    single, batched = results["single"], results["batched"]
    record["notes"] = (
        "Throughput is what the receiver did with the CPU it got: on this 2-core machine it "
        "shares the cores with the load generator, the control plane and whatever else runs "
        "(load_average_1m per phase). receiver_cpu_share is the fraction of one core it got; "
        "events_per_receiver_cpu_second is its throughput per core-second of its own CPU time, "
        "the figure that does not depend on the neighbours."
    )
    record["met"] = {
        "single_events_per_second": single["events_per_second"]
        >= TARGETS["single_events_per_second"],
        "batched_events_per_second": batched["events_per_second"]
        >= TARGETS["batched_events_per_second"],
        "ack_p99_ms": single["ack_ms"]["p99"] <= TARGETS["ack_p99_ms"],
        # The limiter allows write_burst at once, then write_qps per second.
        "api_writes_bounded": all(
            p["api_requests_per_second"] <= 20 + 40 / p["seconds"] + 0.5 for p in (single, batched)
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


async def measure(
    port: int, server_pid: int, singles: list[bytes], batches: list[bytes], args: Any
) -> dict[str, Any]:
    warm = Phase("warmup", 1)
    print("warming up ...", flush=True)
    await run_phase(port, warm, singles, args.senders, 3.0, server_pid)
    single = Phase("single", 1)
    print(f"single-event POSTs, {args.senders} senders, {args.seconds:.0f} s ...", flush=True)
    await run_phase(port, single, singles, args.senders, args.seconds, server_pid)
    batched = Phase("batched", args.batch)
    print(f"batched POSTs of {args.batch}, 4 senders, {args.seconds:.0f} s ...", flush=True)
    await run_phase(port, batched, batches, 4, args.seconds, server_pid)
    print("draining the write buffer ...", flush=True)
    final = await drain(port, 120.0)
    accepted = final.get("falco_triage_ingest_events_accepted_total", 0)
    written = final.get("falco_triage_ingest_events_written_total", 0)
    shed = total(final, "falco_triage_ingest_events_shed_total")
    return {
        "single": single.summary(),
        "batched": batched.summary(),
        "totals": {
            "events_accepted": accepted,
            "events_written": written,
            "events_shed": shed,
            "alerts_created": final.get("falco_triage_ingest_alerts_created_total", 0),
            "api_requests": total(final, "falco_triage_ingest_api_requests_total"),
            "api_errors": {
                k.split("{", 1)[1].rstrip("}"): v
                for k, v in final.items()
                if k.startswith("falco_triage_ingest_api_errors_total{")
            },
            "queue_depth_after_drain": final.get("falco_triage_ingest_queue_depth", 0),
            "all_accepted_written": accepted == written + shed,
        },
    }


def _event_loop() -> str:
    """The event loop of the receiver and of the load generator (the same one)."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    return f"uvloop {uvloop.__version__}"


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "uncommitted"


if __name__ == "__main__":
    raise SystemExit(main())

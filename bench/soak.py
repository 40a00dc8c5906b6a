"""Soak: 1,000 events/s with a realistic mix for a while, then prove nothing was lost.

    python bench/soak.py                # quick: 60 s
    python bench/soak.py --full         # 10 minutes (opt-in: make bench-full)

The real stack on this machine: the test control plane, ``falco-triage ingest`` (the chart's
receiver RBAC, **default settings**: 20 API writes/s, burst 40, a 10,000-alert buffer) and
``falco-triage run`` (default settings), as their own processes. The load is Falco-like:
single-event POSTs over 8 keep-alive connections, open loop at the rate, each event stamped
with the current time. The mix is what a noisy cluster sends: three noisy alerts carry 70 % of
the events (30/25/15 %), 50 steady ones 20 %, and a long tail of distinct alerts (500 in the
quick run, 4,000 in the full one, spread over 10 namespaces) the last 10 %, so new alerts keep
appearing to the end.

After the load stops, the receiver drains its buffer (bounded), and then:

- acknowledged (every event in a 200 answer) == sum of ``status.occurrences.count`` over all
  FalcoAlerts + events counted as shed + events counted as dropped;
- exactly one FalcoAlert per fingerprint (per aggregation window);
- receiver and operator RSS, sampled every 5 s: after warm-up, at the end, the peak, growth;
- API writes/s: the receiver's (through its limiter) and the API server's from all clients.

Results go to ``bench/results/soak.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    apiserver_stats,
    busy_cores,
    component_pids,
    control_plane,
    cpu_seconds,
    machine_busy,
    percentiles,
    record,
    rss_mib,
    say,
    stack,
    write,
)

OPERATOR_NS = "falco-triage-bench"
APP_NAMESPACES = [f"bench-soak-{i}" for i in range(10)]
RATE = 1000.0
CONNECTIONS = 8
TIME_MARK = "2000-01-01T00:00:00.000000000Z"  # replaced by the current time at send
# The noisy three: (share of all events, rule).
NOISY = [
    (0.30, "Contact K8S API Server From Container"),
    (0.25, "Read sensitive file untrusted"),
    (0.15, "Launch Package Management Process in Container"),
]
STEADY_SHARE, STEADY_ALERTS = 0.20, 50
TAIL_SHARE = 0.10


def sample_rules() -> list[str]:
    from tests.unit.factories import sample_files

    rules = []
    for path in sample_files():
        sample = json.loads(path.read_bytes())
        if sample["source"] == "syscall" and (sample["output_fields"] or {}).get("k8s.ns.name"):
            rules.append(sample["rule"])
    return sorted(set(rules))


def request(raw: dict[str, Any], token: str) -> bytes:
    body = json.dumps({**raw, "time": TIME_MARK}).encode()
    head = (
        "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def build_mix(tail_size: int, token: str) -> tuple[list[bytes], list[float], dict[str, Any]]:
    """Request templates (one per alert) and their weights, and the mix's description."""
    from tests.unit.factories import make_raw_event

    rules = sample_rules()
    templates: list[bytes] = []
    weights: list[float] = []
    for share, rule in NOISY:
        raw = make_raw_event(rule, namespace=APP_NAMESPACES[0], pod="noisy-0")
        templates.append(request(raw, token))
        weights.append(share)
    for i in range(STEADY_ALERTS):
        raw = make_raw_event(rules[i % len(rules)], namespace=APP_NAMESPACES[1], pod=f"steady-{i}")
        templates.append(request(raw, token))
        weights.append(STEADY_SHARE / STEADY_ALERTS)
    for i in range(tail_size):
        namespace = APP_NAMESPACES[i % len(APP_NAMESPACES)]
        raw = make_raw_event(rules[i % len(rules)], namespace=namespace, pod=f"tail-{i}")
        templates.append(request(raw, token))
        weights.append(TAIL_SHARE / tail_size)
    mix = {
        "noisy": [{"rule": rule, "share": share} for share, rule in NOISY],
        "steady": {"alerts": STEADY_ALERTS, "share": STEADY_SHARE},
        "tail": {"alerts": tail_size, "share": TAIL_SHARE, "namespaces": len(APP_NAMESPACES)},
    }
    return templates, weights, mix


class Load:
    """Open-loop single-event POSTs over keep-alive connections, counting every answer."""

    def __init__(self, port: int, templates: list[bytes], weights: list[float]) -> None:
        self.port = port
        self.templates = templates
        self.weights = weights
        self.sent = 0
        self.accepted = 0
        self.shed_in_answers = 0
        self.statuses: Counter[int] = Counter()
        self.errors: list[str] = []
        self.latencies: list[float] = []
        self.stop = False

    async def connection(self, index: int, rate: float, seconds: float, seed: int) -> None:
        rng = random.Random(seed)
        choices = rng.choices(range(len(self.templates)), self.weights, k=200_000)
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        start = time.monotonic()
        stamp_second = -1
        stamp = b""
        i = 0
        try:
            while not self.stop:
                due = start + i / rate
                now = time.monotonic()
                if now - start >= seconds:
                    break
                if due > now:
                    await asyncio.sleep(due - now)
                wall = int(time.time())
                if wall != stamp_second:
                    stamp_second = wall
                    stamp = (
                        datetime.fromtimestamp(wall, UTC)
                        .strftime("%Y-%m-%dT%H:%M:%S.000000000Z")
                        .encode()
                    )
                payload = self.templates[choices[i % len(choices)]].replace(
                    TIME_MARK.encode(), stamp
                )
                i += 1
                sent = time.perf_counter()
                writer.write(payload)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                answer = await reader.readexactly(length)
                self.latencies.append(time.perf_counter() - sent)
                self.sent += 1
                status = int(head[9:12])
                self.statuses[status] += 1
                if status == 200:
                    body = json.loads(answer)
                    self.accepted += body["accepted"]
                    self.shed_in_answers += body["shed"]
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.errors.append(f"connection {index}: {type(exc).__name__}: {exc}")
        finally:
            writer.close()

    async def run(self, seconds: float) -> float:
        started = time.monotonic()
        await asyncio.gather(
            *(self.connection(k, RATE / CONNECTIONS, seconds, seed=k) for k in range(CONNECTIONS))
        )
        return time.monotonic() - started


class Sampler(threading.Thread):
    """RSS of the receiver and the operator every ``interval`` seconds."""

    def __init__(self, pids: dict[str, int], interval: float = 5.0) -> None:
        super().__init__(name="rss", daemon=True)
        self.pids = pids
        self.interval = interval
        self.samples: list[dict[str, Any]] = []
        self.stop_event = threading.Event()
        self.started = time.monotonic()

    def run(self) -> None:
        while not self.stop_event.is_set():
            sample: dict[str, Any] = {"t": round(time.monotonic() - self.started, 1)}
            sample.update({name: rss_mib(pid) for name, pid in self.pids.items()})
            self.samples.append(sample)
            self.stop_event.wait(self.interval)


def memory_summary(samples: list[dict[str, Any]], name: str, warm_after: float) -> dict[str, Any]:
    values = [(s["t"], s[name]) for s in samples if s.get(name) is not None]
    warm = [v for t, v in values if t >= warm_after] or [v for _, v in values]
    first, last = warm[0], warm[-1]
    return {
        "after_warmup_mib": first,
        "end_mib": last,
        "peak_mib": max(v for _, v in values),
        "growth_mib": round(last - first, 1),
        "growth_percent": round(100 * (last - first) / first, 1) if first else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="10 minutes (default: 60 s)")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    seconds = args.seconds or (600.0 if args.full else 60.0)
    # NB: at the default 20 writes/s a new alert costs two writes, so the receiver creates at
    # most ~10 new alerts/s; the tail is sized so the run can drain within its limit.
    tail = 4_000 if args.full else 500
    drain_limit = 1800.0 if args.full else 600.0

    from tests.support.load import list_alerts, metric, occurrence_count

    with (
        control_plane([OPERATOR_NS, *APP_NAMESPACES]) as cluster,
        stack(cluster, OPERATOR_NS, receiver={}) as (rx, op),
    ):
        templates, weights, mix = build_mix(tail, rx.token)
        pids = {"receiver": rx.proc.pid, "operator": op.proc.pid}
        all_pids = {**pids, **component_pids(cluster)}
        sampler = Sampler(pids)
        sampler.start()
        api_before = apiserver_stats(cluster)
        rx_before = rx.metrics()
        cpu_before = {name: cpu_seconds(pid) or 0.0 for name, pid in all_pids.items()}
        busy_before = machine_busy()
        say(f"{RATE:g} events/s for {seconds:g} s over {len(templates)} alerts")
        load = Load(rx.port, templates, weights)
        load_seconds = asyncio.run(load.run(seconds))
        busy_after = machine_busy()
        cpu_after = {name: cpu_seconds(pid) or 0.0 for name, pid in all_pids.items()}
        rx_loaded = rx.metrics()
        api_loaded = apiserver_stats(cluster)
        say(f"sent {load.sent} in {load_seconds:.1f} s; draining the receiver's buffer")

        drain_started = time.monotonic()
        while time.monotonic() - drain_started < drain_limit:
            values = rx.metrics()
            settled = (
                metric(values, "events_written_total")
                + metric(values, "events_shed_total")
                + metric(values, "events_dropped_total")
            )
            if metric(values, "queue_depth") == 0 and settled >= metric(
                values, "events_accepted_total"
            ):
                break
            time.sleep(2)
        drain_seconds = time.monotonic() - drain_started
        rx_final = rx.metrics()
        say(
            f"drain ended after {drain_seconds:.0f} s (queue depth "
            f"{metric(rx_final, 'queue_depth'):.0f}); reading every FalcoAlert"
        )
        alerts = list_alerts(cluster, [OPERATOR_NS, *APP_NAMESPACES])
        analyzed = sum(1 for a in alerts.values() if (a.get("status") or {}).get("analysis"))
        sampler.stop_event.set()
        sampler.join(10)

    occurrences = sum(occurrence_count(a) for a in alerts.values())
    uncounted = sorted(k for k, a in alerts.items() if not occurrence_count(a))
    shed = metric(rx_final, "events_shed_total")
    dropped = metric(rx_final, "events_dropped_total")
    acknowledged = load.accepted + load.shed_in_answers
    windows: dict[str, set[int]] = {}
    per_fingerprint: Counter[str] = Counter()
    for alert in alerts.values():
        fingerprint = alert["spec"]["fingerprint"]
        per_fingerprint[fingerprint] += 1
        when = datetime.fromisoformat(alert["spec"]["time"].replace("Z", "+00:00"))
        windows.setdefault(fingerprint, set()).add(int(when.timestamp()) // 86_400)
    duplicates = {f: n for f, n in per_fingerprint.items() if n > len(windows[f])}
    rx_writes = metric(rx_loaded, "api_requests_total") - metric(rx_before, "api_requests_total")
    document = record(
        "soak",
        "full" if args.full else "quick",
        what="1,000 events/s, realistic mix: nothing lost, one alert per fingerprint, memory",
        config={
            "seconds": seconds,
            "rate_events_per_second": RATE,
            "connections": CONNECTIONS,
            "mix": mix,
            "receiver": "default settings (write_qps 20, write_burst 40, queue 10000)",
            "operator": "default settings",
        },
        results={
            "events_sent": load.sent,
            "achieved_events_per_second": round(load.sent / load_seconds, 1),
            "answers": dict(load.statuses),
            "connection_errors": load.errors,
            "ack_ms": percentiles(load.latencies, scale=1000, digits=2),
            "accounting": {
                "acknowledged": acknowledged,
                "sum_of_occurrences": occurrences,
                "shed_counted": shed,
                "dropped_counted": dropped,
                "exact": acknowledged == occurrences + shed + dropped,
            },
            "alerts": len(alerts),
            "alerts_without_occurrences": len(uncounted),
            "receiver_queue_depth_at_end": metric(rx_final, "queue_depth"),
            "receiver_api_errors": {
                sample.split("{", 1)[1].rstrip("}"): value
                for sample, value in rx_final.items()
                if sample.startswith("falco_triage_ingest_api_errors_total{")
            },
            "alerts_analyzed": analyzed,
            "fingerprints": len(per_fingerprint),
            "fingerprints_with_more_than_one_alert_per_window": len(duplicates),
            "drain_seconds_after_load": round(drain_seconds, 1),
            "api_writes_per_second": {
                "receiver_during_load": round(rx_writes / load_seconds, 1),
                "receiver_by_operation": {
                    op_: round(
                        (
                            metric(rx_final, "api_requests_total", operation=op_)
                            - metric(rx_before, "api_requests_total", operation=op_)
                        )
                        / (load_seconds + drain_seconds),
                        1,
                    )
                    for op_ in ("create", "patch_status", "get")
                },
                "apiserver_all_clients_during_load": round(
                    (api_loaded["writes"] - api_before["writes"]) / load_seconds, 1
                ),
            },
            "cpu_cores_used_during_load": {
                name: round((cpu_after[name] - cpu_before[name]) / load_seconds, 2)
                for name in all_pids
            },
            "machine_cpu_cores_busy_during_load": busy_cores(busy_before, busy_after),
            "memory": {
                name: memory_summary(sampler.samples, name, warm_after=min(30.0, seconds / 4))
                for name in pids
            },
            "rss_samples": sampler.samples,
        },
    )
    write("soak", document, args.out)
    accounting = document["results"]["accounting"]
    say(f"accounting {accounting}; duplicates {len(duplicates)}")
    return 0 if accounting["exact"] and not duplicates else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark end to end: Falco event POSTed → FalcoAlert analyzed, at 10, 50 and 200 new
distinct alerts per second.

    python bench/e2e.py                 # quick: 15 s per rate
    python bench/e2e.py --full          # 60 s per rate
    python bench/e2e.py --rates 10 50   # other rates

Everything is real and on this machine: the test control plane (etcd, kube-apiserver,
kube-controller-manager), ``falco-triage ingest`` (the chart's receiver RBAC) and
``falco-triage run`` as their own processes. Every event is a new alert (its own pod), of one
of the sample syscall rules, with the current time. Arrivals are open-loop at the rate (four
senders on their own schedules, not waiting for the pipeline). The clock starts just before
the POST and stops when a watch on FalcoAlerts delivers the alert with ``status.analysis``
(watch delivery included, so it over-estimates, never under-); the time the alert first
appears is recorded too, which splits the path into receiver → API server and operator.

Settings: the receiver's write rate is raised to fit the load (``write_qps`` = 3 x rate,
since a new alert takes two writes; the default of 20 writes/s would cap new alerts at 10/s by
design), and retention is set so it cannot delete alerts during the run. Everything else is
default. Event → remediation object (Enforce) is measured by ``bench/response.py``.
Results go to ``bench/results/e2e.json``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
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
PREFIX = "bench-e2e"
SENDERS = 4
WARMUP_ALERTS = 20


def sample_rules() -> list[str]:
    """The sample events' syscall rules about pods (their alerts land in the pod's namespace)."""
    from tests.unit.factories import sample_files

    rules = []
    for path in sample_files():
        sample = json.loads(path.read_bytes())
        if sample["source"] == "syscall" and (sample["output_fields"] or {}).get("k8s.ns.name"):
            rules.append(sample["rule"])
    return sorted(set(rules))


def distinct_events(namespace: str, count: int, rules: list[str]) -> list[tuple[bytes, Any]]:
    """``count`` events, each a new alert (its own pod), with their alert keys."""
    from tests.support.load import expected_key
    from tests.unit.factories import make_raw_event

    now = datetime.now(UTC)
    events = []
    for i in range(count):
        raw = make_raw_event(rules[i % len(rules)], namespace=namespace, pod=f"pod-{i:06d}", at=now)
        events.append((json.dumps(raw).encode(), expected_key(raw, OPERATOR_NS)))
    return events


class Watcher(threading.Thread):
    """Records when each FalcoAlert is first seen, first seen analyzed, and first seen with a
    policy decision (monotonic time)."""

    def __init__(self, kubeconfig: Path) -> None:
        super().__init__(name="watcher", daemon=True)
        from falco_triage.k8s.client import new_api_client

        self.api = new_api_client(kubeconfig)
        self.created: dict[tuple[str, str], float] = {}
        self.analyzed: dict[tuple[str, str], float] = {}
        self.decided: dict[tuple[str, str], float] = {}
        self.stop_event = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        from kubernetes import client, watch

        api = client.CustomObjectsApi(self.api)
        version = None
        while not self.stop_event.is_set():
            stream = watch.Watch()
            try:
                for change in stream.stream(
                    api.list_cluster_custom_object,
                    "falcotriage.io",
                    "v1alpha1",
                    "falcoalerts",
                    resource_version=version,
                    timeout_seconds=30,
                    allow_watch_bookmarks=False,
                ):
                    self.ready.set()
                    seen = time.monotonic()
                    obj = change["object"]
                    meta = obj.get("metadata") or {}
                    version = meta.get("resourceVersion") or version
                    key = (meta.get("namespace"), meta.get("name"))
                    self.created.setdefault(key, seen)
                    status = obj.get("status") or {}
                    if status.get("analysis"):
                        self.analyzed.setdefault(key, seen)
                    if status.get("decision"):
                        self.decided.setdefault(key, seen)
                    if self.stop_event.is_set():
                        break
            except Exception as exc:  # a watch that ended with 410 Gone etc.: start over
                say(f"watch restarted: {type(exc).__name__}: {str(exc)[:120]}")
                version = None
            finally:
                stream.stop()
            self.ready.set()


def send(port: int, token: str, events: list[tuple[bytes, Any]], rate: float) -> dict[Any, Any]:
    """POST ``events`` open-loop at ``rate``/s from SENDERS threads; post times and answers."""
    posted: dict[Any, float] = {}
    acks: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    start = time.monotonic() + 0.2
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def sender(offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in range(offset, len(events), SENDERS):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            body, key = events[i]
            t0 = time.monotonic()
            connection.request("POST", "/v1/events", body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            took = time.monotonic() - t0
            with lock:
                posted[key] = t0
                acks.append(took)
                statuses[response.status] = statuses.get(response.status, 0) + 1
        connection.close()

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"posted": posted, "acks": acks, "statuses": statuses, "started": start}


def run_rate(
    cluster: Any, rx: Any, op: Any, watcher: Watcher, rate: float, seconds: float, drain: float
) -> dict[str, Any]:
    from tests.support.load import metric

    namespace = f"{PREFIX}-{int(rate)}"
    cluster.kubectl("create", "namespace", namespace)
    events = distinct_events(namespace, int(rate * seconds), sample_rules())
    say(f"{rate:g} new alerts/s for {seconds:g} s ({len(events)} alerts)")
    pids = {"receiver": rx.proc.pid, "operator": op.proc.pid, **component_pids(cluster)}
    before = rx.metrics()
    api_before = apiserver_stats(cluster)
    cpu_before = {name: cpu_seconds(pid) or 0.0 for name, pid in pids.items()}
    busy_before = machine_busy()
    sent = send(rx.port, rx.token, events, rate)
    send_seconds = time.monotonic() - sent["started"]
    keys = list(sent["posted"])
    deadline = time.monotonic() + drain
    while time.monotonic() < deadline and not all(k in watcher.analyzed for k in keys):
        time.sleep(0.5)
    phase_seconds = time.monotonic() - sent["started"]
    busy_after = machine_busy()
    after = rx.metrics()
    api_after = apiserver_stats(cluster)
    cpu_after = {name: cpu_seconds(pid) or 0.0 for name, pid in pids.items()}
    api = {k: api_after[k] - api_before[k] for k in api_after}
    to_analyzed = [watcher.analyzed[k] - sent["posted"][k] for k in keys if k in watcher.analyzed]
    to_created = [watcher.created[k] - sent["posted"][k] for k in keys if k in watcher.created]
    missing = len(keys) - len(to_analyzed)
    api_requests = metric(after, "api_requests_total") - metric(before, "api_requests_total")
    result = {
        "namespace": namespace,
        "target_rate": rate,
        "alerts_posted": len(keys),
        "achieved_post_rate": round(len(keys) / send_seconds, 1),
        "answers": sent["statuses"],
        "analyzed": len(to_analyzed),
        "not_analyzed_within_drain": missing,
        "post_to_analyzed_seconds": percentiles(to_analyzed),
        "post_to_created_seconds": percentiles(to_created),
        "ack_ms": percentiles(sent["acks"], scale=1000, digits=2),
        "receiver_api_requests_per_second": round(api_requests / phase_seconds, 1),
        "apiserver_writes_per_second_all_clients": round(api["writes"] / phase_seconds, 1),
        "apiserver_falcoalert_write_mean_ms": round(
            1000 * api["falcoalert_write_seconds"] / max(api["falcoalert_writes"], 1), 1
        ),
        "cpu_cores_used": {
            name: round((cpu_after[name] - cpu_before[name]) / phase_seconds, 2) for name in pids
        },
        "machine_cpu_cores_busy": busy_cores(busy_before, busy_after),
        "phase_seconds": round(phase_seconds, 1),
    }
    p = result["post_to_analyzed_seconds"]
    say(
        f"  analyzed {len(to_analyzed)}/{len(keys)}: p50 {p.get('p50')} s, p99 {p.get('p99')} s;"
        f" CPU {result['cpu_cores_used']}, machine {result['machine_cpu_cores_busy']} cores busy"
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="60 s per rate (default: 15 s)")
    parser.add_argument("--rates", type=float, nargs="+", default=[10.0, 50.0, 200.0])
    parser.add_argument("--seconds", type=float, default=None, help="override seconds per rate")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    seconds = args.seconds or (60.0 if args.full else 15.0)
    drain = 180.0 if args.full else 90.0
    top = max(args.rates)
    receiver = {
        "write_qps": max(20.0, 3 * top),
        "write_burst": max(40, int(top)),
        "write_workers": 8,
    }
    operator_env = {"FALCO_TRIAGE_OPERATOR__RETENTION__MAX_PER_NAMESPACE": "100000"}
    phases = []
    with (
        control_plane([OPERATOR_NS]) as cluster,
        stack(
            cluster,
            OPERATOR_NS,
            receiver=receiver,
            operator_args=["-n", f"{PREFIX}-*"],
            operator_env=operator_env,
        ) as (rx, op),
    ):
        watcher = Watcher(cluster.kubeconfig)
        watcher.start()
        watcher.ready.wait(30)
        say("warming up")
        cluster.kubectl("create", "namespace", f"{PREFIX}-warmup")
        warm = distinct_events(f"{PREFIX}-warmup", WARMUP_ALERTS, sample_rules())
        send(rx.port, rx.token, warm, 5.0)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(k in watcher.analyzed for _, k in warm):
            time.sleep(0.5)
        for rate in args.rates:
            phases.append(run_rate(cluster, rx, op, watcher, rate, seconds, drain))
        memory = {
            "receiver_rss_mib": rss_mib(rx.proc.pid),
            "operator_rss_mib": rss_mib(op.proc.pid),
        }
        watcher.stop_event.set()

    document = record(
        "e2e",
        "full" if args.full else "quick",
        what="Falco event POSTed -> FalcoAlert with status.analysis, seen by a watch (seconds)",
        config={
            "seconds_per_rate": seconds,
            "drain_seconds": drain,
            "senders": SENDERS,
            "arrivals": "open loop, one new distinct alert per event",
            "warmup_alerts_not_measured": WARMUP_ALERTS,
            "receiver": {**receiver, "rbac": "the chart's receiver ClusterRole"},
            "operator": {"args": ["-n", f"{PREFIX}-*"], "env": operator_env},
            "control_plane": "etcd + kube-apiserver + kube-controller-manager on this machine",
        },
        results={"rates": phases, "memory_at_end": memory},
    )
    write("e2e", document, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

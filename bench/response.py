"""Benchmark the response path: Falco event posted → isolating NetworkPolicy present.

    python bench/response.py                  # 100 alerts at 5/s, through the receiver
    python bench/response.py --via alerts     # create FalcoAlerts directly (operator only)

Everything is real and local: the test control plane (etcd, kube-apiserver,
kube-controller-manager), ``falco-triage ingest`` and ``falco-triage run`` as processes with
default settings, on this machine's cores. 100 pods exist in one namespace, each reporting a
running container (status patched in, as a kubelet would); one Enforce ResponsePolicy isolates
the pod of every "Terminal shell in container" alert.

After a few warm-up alerts (not measured: the first ones also pay for lazy loading), alerts
arrive open-loop at ``--rate`` per second (arrivals do not wait for responses, as in a
cluster): one Falco event per pod, each its own alert, POSTed to the receiver. The clock starts
just before the POST and stops when a watch on NetworkPolicies in the namespace delivers the
alert's policy (so watch delivery is included: it over-estimates, never under-). Also measured:
until the pod carries the isolation label (the moment isolation takes effect) and until the
alert's phase is Remediated. Results go to ``bench/results/response.json`` with the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "operator")]

TOKEN = "bench-token-0123456789abcdef0123"
OPERATOR_NS = "falco-triage-bench"
APP_NS = "bench-response"
RULE = "Terminal shell in container"
TARGET_P99_SECONDS = 1.5
ISOLATION_PREFIX = "falcotriage.io/isolated-"
# Generous: at 5 alerts/s the last one is posted after 20 s; anything beyond this is broken.
DRAIN_SECONDS = 120.0
_WATCH_SECONDS = 600


def container_id(index: int) -> str:
    return f"{index:012x}" + "ab" * 26


def pod_name(index: int) -> str:
    return f"web-{index:03d}"


def falco_event(index: int) -> dict[str, Any]:
    """One Falco http_output event for pod ``index`` (as tests/data/events has them)."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
    short = container_id(index)[:12]
    return {
        "hostname": "worker-1",
        "output": f"A shell was spawned in a container with an attached terminal "
        f"(container_id={short} k8s_pod_name={pod_name(index)} k8s_ns_name={APP_NS})",
        "output_fields": {
            "container.id": short,
            "container.image.repository": "docker.io/library/nginx",
            "container.name": "app",
            "evt.type": "execve",
            "k8s.ns.name": APP_NS,
            "k8s.pod.name": pod_name(index),
            "proc.cmdline": "bash",
            "proc.name": "bash",
            "proc.pname": "runc",
            "user.name": "root",
            "user.uid": 0,
        },
        "priority": "Notice",
        "rule": RULE,
        "source": "syscall",
        "tags": ["T1059", "container", "mitre_execution", "shell"],
        "time": stamp,
    }


# --------------------------------------------------------------------------------------------
# Cluster set-up
# --------------------------------------------------------------------------------------------


def prepare(cluster: Any, api: Any, count: int) -> None:
    """CRDs, namespaces, ``count`` pods with running containers, and the policy."""
    from falco_triage.k8s.rest import RestClient

    cluster.apply_file(REPO / "crds")
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    for namespace in (APP_NS, OPERATOR_NS):
        cluster.kubectl("create", "namespace", namespace)
    rest = RestClient(api)
    for index in range(count):
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod_name(index), "namespace": APP_NS, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "docker.io/library/nginx"}]},
        }
        rest.create(f"/api/v1/namespaces/{APP_NS}/pods", pod, field_manager="bench")
        running = {
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": "app",
                        "image": "docker.io/library/nginx",
                        "imageID": "",
                        "containerID": f"containerd://{container_id(index)}",
                        "ready": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                    }
                ],
            }
        }
        rest.merge_patch(
            f"/api/v1/namespaces/{APP_NS}/pods/{pod_name(index)}/status",
            running,
            field_manager="bench",
        )
    policy = {
        "apiVersion": "falcotriage.io/v1alpha1",
        "kind": "ResponsePolicy",
        "metadata": {"name": "isolate-shells", "namespace": APP_NS},
        "spec": {
            "mode": "Enforce",
            "match": {"rules": [RULE]},
            "actions": [{"name": "isolate", "isolatePod": {"allowDns": True}}],
        },
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(policy))


def wait_until(probe: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if probe():
                return
        time.sleep(0.2)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


# --------------------------------------------------------------------------------------------
# Observation: watches record when each pod's policy, label and phase appear
# --------------------------------------------------------------------------------------------


class Observer:
    """Three watches in threads; ``seen[kind][pod]`` is the monotonic time first observed."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.seen: dict[str, dict[str, float]] = {"netpol": {}, "label": {}, "remediated": {}}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def note(self, kind: str, pod: str | None) -> None:
        if not pod:
            return
        at = time.monotonic()
        with self.lock:
            self.seen[kind].setdefault(pod, at)

    def _watch(
        self, list_fn: Callable[..., Any], on_event: Callable[[dict[str, Any]], None]
    ) -> None:
        from kubernetes import watch

        # NB: one long watch per kind; a restart would re-list and record late (never early).
        # The client's watch module is untyped.
        while not self.stop.is_set():
            stream = watch.Watch()  # type: ignore[no-untyped-call]
            events = stream.stream(  # type: ignore[no-untyped-call]
                list_fn, APP_NS, timeout_seconds=_WATCH_SECONDS
            )
            try:
                for event in events:
                    on_event(self.api.sanitize_for_serialization(event["object"]))
                    if self.stop.is_set():
                        break
            except Exception as exc:
                sys.stderr.write(f"watch restarted: {exc}\n")
            finally:
                stream.stop()  # type: ignore[no-untyped-call]

    def start(self) -> None:
        from kubernetes import client

        net = client.NetworkingV1Api(self.api)
        core = client.CoreV1Api(self.api)
        custom = client.CustomObjectsApi(self.api)

        def on_netpol(obj: dict[str, Any]) -> None:
            annotations = (obj.get("metadata") or {}).get("annotations") or {}
            self.note("netpol", annotations.get("falcotriage.io/pod"))

        def on_pod(obj: dict[str, Any]) -> None:
            meta = obj.get("metadata") or {}
            if any(k.startswith(ISOLATION_PREFIX) for k in meta.get("labels") or {}):
                self.note("label", meta.get("name"))

        def on_alert(obj: dict[str, Any]) -> None:
            if (obj.get("status") or {}).get("phase") == "Remediated":
                self.note("remediated", ((obj.get("spec") or {}).get("target") or {}).get("pod"))

        def alerts(namespace: str, **kwargs: Any) -> Any:
            return custom.list_namespaced_custom_object(
                "falcotriage.io", "v1alpha1", namespace, "falcoalerts", **kwargs
            )

        for list_fn, handler in (
            (net.list_namespaced_network_policy, on_netpol),
            (core.list_namespaced_pod, on_pod),
            (alerts, on_alert),
        ):
            thread = threading.Thread(target=self._watch, args=(list_fn, handler), daemon=True)
            thread.start()
            self.threads.append(thread)

    def count(self, kind: str) -> int:
        with self.lock:
            return len(self.seen[kind])


# --------------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------------


def post_event(url: str, event: dict[str, Any]) -> None:
    request = urllib.request.Request(  # noqa: S310 - a loopback http URL built here
        f"{url}/v1/events",
        data=json.dumps(event).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        if response.status not in (200, 202):
            raise SystemExit(f"receiver answered {response.status}")


def create_alert(api: Any, index: int) -> None:
    """``--via alerts``: the FalcoAlert the receiver would write, created directly."""
    from falco_triage.events.fingerprint import alert_name, alert_spec
    from falco_triage.events.normalize import normalize_event
    from falco_triage.events.parse import Limits
    from falco_triage.k8s.alerts import alert_body
    from falco_triage.k8s.rest import RestClient

    spec = alert_spec(normalize_event(falco_event(index), Limits()), OPERATOR_NS)
    body = alert_body(alert_name(spec), APP_NS, spec)
    RestClient(api).create(
        f"/apis/falcotriage.io/v1alpha1/namespaces/{APP_NS}/falcoalerts",
        body,
        field_manager="bench",
    )


def run_load(send: Callable[[int], None], count: int, rate: float) -> dict[str, float]:
    """Send ``count`` alerts open-loop at ``rate``/s; the start time of each, by pod."""
    started: dict[str, float] = {}
    begin = time.monotonic()
    for index in range(count):
        delay = begin + index / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        started[pod_name(index)] = time.monotonic()
        send(index)
    return started


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def rank(p: float) -> float:  # nearest-rank: p99 of 100 samples is the 99th smallest
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    return {
        "count": len(ordered),
        "p50": round(rank(50), 4),
        "p90": round(rank(90), 4),
        "p99": round(rank(99), 4),
        "max": round(ordered[-1], 4),
        "mean": round(statistics.fmean(ordered), 4),
    }


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


@contextlib.contextmanager
def services(kubeconfig: Path, via: str) -> Iterator[str | None]:
    """The operator and (unless ``--via alerts``) the receiver; yields the receiver's URL."""
    from tests.support.processes import Service, free_port, operator_service

    with contextlib.ExitStack() as stack:
        stack.enter_context(
            operator_service(kubeconfig, env={"FALCO_TRIAGE_NAMESPACE": OPERATOR_NS})
        )
        url = None
        if via == "receiver":
            port = free_port()
            env = {
                "KUBECONFIG": str(kubeconfig),
                "FALCO_TRIAGE_NAMESPACE": OPERATOR_NS,
                "FALCO_TRIAGE_INGEST__TOKEN": TOKEN,
                "FALCO_TRIAGE_INGEST__HOST": "127.0.0.1",
                "FALCO_TRIAGE_INGEST__PORT": str(port),
                "FALCO_TRIAGE_OPERATOR__METRICS_PORT": "0",
                "PYTHONUNBUFFERED": "1",
            }
            url = f"http://127.0.0.1:{port}"
            stack.enter_context(Service("receiver", ["ingest"], env, f"{url}/readyz"))
        yield url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=100)
    parser.add_argument(
        "--warmup", type=int, default=3, help="alerts sent (and not measured) first"
    )
    parser.add_argument("--rate", type=float, default=5.0, help="alerts per second")
    parser.add_argument("--via", choices=["receiver", "alerts"], default="receiver")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "response.json")
    args = parser.parse_args()

    from tests.support.controlplane import control_plane_from_env

    from falco_triage.k8s.client import new_api_client

    at_start = machine()
    with control_plane_from_env(REPO) as cluster:
        print("preparing the cluster ...", flush=True)
        api = new_api_client(Path(cluster.kubeconfig), pool_size=8)
        prepare(cluster, api, args.alerts + args.warmup)
        observer = Observer(api)
        observer.start()
        with services(Path(cluster.kubeconfig), args.via) as url:

            def policy_valid() -> bool:
                out = cluster.kubectl(
                    "get", "frp", "isolate-shells", "-n", APP_NS, "-o", "json"
                ).stdout
                conditions = (json.loads(out).get("status") or {}).get("conditions") or []
                return any(c["type"] == "Valid" and c["status"] == "True" for c in conditions)

            wait_until(policy_valid, 60, "the operator to validate the policy")
            print(f"sending {args.alerts} alerts at {args.rate}/s via {args.via} ...", flush=True)
            if url is not None:
                receiver_url = url

                def send(index: int) -> None:
                    post_event(receiver_url, falco_event(index))
            else:

                def send(index: int) -> None:
                    create_alert(api, index)

            # Warm-up: the first alerts also pay for lazy loading (knowledge base, templates).
            for index in range(args.alerts, args.alerts + args.warmup):
                send(index)
            wait_until(
                lambda: observer.count("remediated") >= args.warmup,
                60,
                "the warm-up alerts",
            )
            started = run_load(send, args.alerts, args.rate)
            total = args.alerts + args.warmup
            wait_until(
                lambda: all(observer.count(k) >= total for k in ("netpol", "label", "remediated")),
                DRAIN_SECONDS,
                f"{total} NetworkPolicies, isolated pods and Remediated alerts",
            )
            observer.stop.set()
            netpols = json.loads(
                cluster.kubectl("get", "netpol", "-n", APP_NS, "-o", "json").stdout
            )["items"]

    at_end = [round(x, 2) for x in os.getloadavg()]
    results = {
        kind: percentiles([observer.seen[kind][pod] - t for pod, t in started.items()])
        for kind in ("netpol", "label", "remediated")
    }
    record = {
        "benchmark": "response",
        "what": "Falco event posted -> isolating NetworkPolicy present (seconds)",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "machine": {**at_start, "load_average_at_end": at_end},
        "config": {
            "path": "Falco event POST -> falco-triage ingest -> FalcoAlert -> falco-triage run"
            if args.via == "receiver"
            else "FalcoAlert created directly -> falco-triage run",
            "alerts": args.alerts,
            "warmup_alerts_not_measured": args.warmup,
            "arrival_rate_per_second": args.rate,
            "policy": "one Enforce ResponsePolicy, action isolatePod",
            "control_plane": "etcd + kube-apiserver + kube-controller-manager on this machine",
            "settings": "defaults (receiver: write_qps 20, burst 40)",
        },
        "results_seconds": {
            "event_to_networkpolicy": results["netpol"],
            "event_to_pod_isolated": results["label"],
            "event_to_phase_remediated": results["remediated"],
        },
        "network_policies_created": len(netpols),
        "target": {"event_to_networkpolicy_p99_seconds": TARGET_P99_SECONDS},
        "met": results["netpol"]["p99"] <= TARGET_P99_SECONDS,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0 if len(netpols) == args.alerts + args.warmup else 1


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

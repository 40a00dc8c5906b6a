"""Scale: N FalcoAlerts present — operator start-up, memory, and the cost of re-listing them.

    python bench/scale.py               # quick: 1,000 alerts
    python bench/scale.py --full        # 10,000 alerts (opt-in: make bench-full)

On the test control plane of this machine. The alerts are written as the receiver writes them
(``AlertStore.record``: create, then ``status.occurrences``), 250 per namespace (below the
default retention of 300 per namespace, as a real cluster holding that many would have them).
Then:

1. **Backlog**: ``falco-triage run`` (default settings) starts with N alerts never analyzed;
   time until half, 90 %, 99 % and all of them have ``status.analysis`` (seen by a watch),
   its peak memory, and any ERROR lines in its log.
2. **Restart**: the operator is stopped (SIGTERM) and started again with N analyzed alerts.
   Time from process start to its liveness probe answering, and until a new alert created
   then is analyzed (it has listed every alert and is serving); the API writes made in that
   time plus 15 s (settled alerts should cost none); its memory then (RSS).
3. **Re-list**: a full LIST of the FalcoAlerts (what every informer or kopf watch does when it
   starts, or its watch expires): time and size, median of 5; and after an API server restart,
   the time until the operator analyzes an alert created after it (its watches came back).

Results go to ``bench/results/scale.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import apiserver_stats, control_plane, record, rss_mib, say, write
from e2e import Watcher

OPERATOR_NS = "falco-triage-bench"
PER_NAMESPACE = 250
# Seconds after a new alert was analyzed in which the restarted operator's own writes are
# still counted (settled alerts should cost none).
RESTART_QUIET = 15.0
NEW_ALERT_LIMIT = 600.0  # "clearly broken" beyond this


def namespaces_for(count: int) -> list[str]:
    return [f"bench-scale-{i:03d}" for i in range((count + PER_NAMESPACE - 1) // PER_NAMESPACE)]


def write_alerts(kubeconfig: Path, count: int) -> float:
    """Create ``count`` alerts as the receiver would; returns alerts written per second."""
    from tests.unit.factories import make_raw_event, sample_files

    from falco_triage.events.fingerprint import alert_name, alert_spec
    from falco_triage.events.normalize import normalize_event
    from falco_triage.events.parse import Limits
    from falco_triage.k8s.alerts import AlertStore, Delta
    from falco_triage.k8s.client import new_api_client

    rules = sorted(
        {
            s["rule"]
            for s in (json.loads(p.read_bytes()) for p in sample_files())
            if s["source"] == "syscall" and (s["output_fields"] or {}).get("k8s.ns.name")
        }
    )
    names = namespaces_for(count)
    now = datetime.now(UTC)
    store = AlertStore(new_api_client(kubeconfig, pool_size=8))

    def one(i: int) -> None:
        namespace = names[i // PER_NAMESPACE]
        raw = make_raw_event(rules[i % len(rules)], namespace=namespace, pod=f"pod-{i}", at=now)
        event = normalize_event(raw, Limits())
        spec = alert_spec(event, OPERATOR_NS)
        store.record(namespace, alert_name(spec), lambda: spec, Delta(1, event.time, event.time))

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, range(count)))
    return count / (time.monotonic() - started)


def analyze_new_alert(cluster: Any, pod: str, since: float) -> float | None:
    """Create one new alert (as the receiver would) and return the seconds from ``since``
    until it has ``status.analysis``; None if not within the limit."""
    from tests.support.load import expected_key
    from tests.unit.factories import make_raw_event

    from falco_triage.events.fingerprint import alert_spec
    from falco_triage.events.normalize import normalize_event
    from falco_triage.events.parse import Limits
    from falco_triage.k8s.alerts import AlertStore, Delta
    from falco_triage.k8s.client import new_api_client

    raw = make_raw_event(namespace=namespaces_for(1)[0], pod=pod, at=datetime.now(UTC))
    spec = alert_spec(normalize_event(raw, Limits()), OPERATOR_NS)
    namespace, name = expected_key(raw, OPERATOR_NS)
    store = AlertStore(new_api_client(cluster.kubeconfig))
    deadline = time.monotonic() + NEW_ALERT_LIMIT
    while time.monotonic() < deadline:
        try:
            store.record(namespace, name, lambda: spec, Delta(1, spec.time, spec.time))
            break
        except Exception:
            time.sleep(0.5)
    while time.monotonic() < deadline:
        found = cluster.kubectl(
            "get", "falcoalert", name, "-n", namespace, "-o", "json", check=False
        )
        if found.returncode == 0 and (json.loads(found.stdout).get("status") or {}).get("analysis"):
            return round(time.monotonic() - since, 1)
        time.sleep(0.25)
    return None


def list_all(cluster: Any) -> tuple[float, int, list[dict[str, Any]]]:
    """One full LIST of FalcoAlerts: (seconds, bytes, items)."""
    started = time.monotonic()
    result = cluster.kubectl(
        "get", "--raw", "/apis/falcotriage.io/v1alpha1/falcoalerts", timeout=300
    )
    took = time.monotonic() - started
    items: list[dict[str, Any]] = json.loads(result.stdout)["items"]
    return took, len(result.stdout), items


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except OSError:
        return False


def start_operator(cluster: Any) -> Any:
    from tests.support.processes import operator_service

    service = operator_service(cluster.kubeconfig, env={"FALCO_TRIAGE_NAMESPACE": OPERATOR_NS})
    # Started by hand (not Service.start) to time the probe ourselves.
    import subprocess

    log = service.log_path.open("ab")
    service.proc = subprocess.Popen(
        service.args, env=service.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    log.close()
    return service


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="10,000 alerts (default: 1,000)")
    parser.add_argument("--alerts", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    count = args.alerts or (10_000 if args.full else 1_000)
    backlog_limit = 1800.0 if count > 2000 else 600.0
    results: dict[str, Any] = {}

    with control_plane([OPERATOR_NS, *namespaces_for(count)]) as cluster:
        say(f"writing {count} FalcoAlerts")
        results["alerts_written_per_second"] = round(write_alerts(cluster.kubeconfig, count), 1)

        say("backlog: operator starts with every alert unanalyzed")
        watcher = Watcher(cluster.kubeconfig)
        watcher.start()
        watcher.ready.wait(30)
        operator = start_operator(cluster)
        try:
            started = time.monotonic()
            peak = 0.0
            marks: dict[str, float] = {}
            while time.monotonic() - started < backlog_limit:
                peak = max(peak, rss_mib(operator.proc.pid) or 0.0)
                done = len(watcher.analyzed)
                for share in (0.5, 0.9, 0.99, 1.0):
                    if done >= share * count:
                        marks.setdefault(f"{share:.0%}", round(time.monotonic() - started, 1))
                if done >= count and len(watcher.decided) >= count:
                    marks["100% decided"] = round(time.monotonic() - started, 1)
                    break
                time.sleep(0.5)
            took = time.monotonic() - started
            log = operator.log_path.read_text(errors="replace")
            problems = [line[:300] for line in log.splitlines() if " ERROR " in line]
            results["backlog"] = {
                "alerts": count,
                "analyzed": done,
                "seconds_until_share_analyzed": marks,
                "alerts_analyzed_per_second": round(done / (marks.get("100%") or took), 1),
                "operator_peak_rss_mib": peak,
                "operator_error_lines": len(problems),
                "first_error_lines": problems[:5],
            }
            say(f"  {done}/{count} analyzed; {marks}; {len(problems)} error lines")
        finally:
            operator.cleanup()
            watcher.stop_event.set()

        say("restart: operator starts with every alert analyzed")
        writes_before = apiserver_stats(cluster)["writes"]
        operator = start_operator(cluster)
        try:
            started = time.monotonic()
            deadline = started + backlog_limit
            while not healthy(operator.health_url) and time.monotonic() < deadline:
                time.sleep(0.05)
            to_live = time.monotonic() - started
            # Serving again: a new alert created now is analyzed once kopf has listed every
            # alert and caught up (nothing else to do: all are analyzed and decided).
            to_serving = analyze_new_alert(cluster, "after-operator-restart", started)
            time.sleep(RESTART_QUIET)  # anything the start-up still writes, it writes by now
            writes = apiserver_stats(cluster)["writes"] - writes_before
            results["restart"] = {
                "seconds_to_liveness_probe_ok": round(to_live, 2),
                "seconds_to_new_alert_analyzed": to_serving,
                "api_writes_in_first_seconds": {
                    "seconds": round(time.monotonic() - started, 1),
                    # the new alert itself costs about four (create, occurrences, analysis,
                    # decision) plus kopf's bookkeeping; the rest is the start-up's
                    "writes": writes,
                },
                "operator_rss_mib_after_start": rss_mib(operator.proc.pid),
            }
            say(
                f"  live after {to_live:.1f} s, new alert analyzed after {to_serving} s, "
                f"{writes:.0f} API writes"
            )

            say("re-list")
            lists = [list_all(cluster) for _ in range(5)]
            results["relist"] = {
                "list_seconds_median": round(statistics.median(t for t, _, _ in lists), 3),
                "list_seconds_max": round(max(t for t, _, _ in lists), 3),
                "list_megabytes": round(lists[0][1] / 1e6, 1),
                "items": len(lists[0][2]),
            }
            if cluster.can_restart_apiserver:
                cluster.stop_apiserver()
                cluster.start_apiserver()
                restarted = time.monotonic()
                took = analyze_new_alert(cluster, "after-apiserver-restart", restarted)
                results["relist"]["seconds_from_apiserver_restart_to_new_alert_analyzed"] = took
                results["relist"]["operator_alive_after_apiserver_restart"] = (
                    operator.proc.poll() is None
                )
                tail = operator.log_path.read_text(errors="replace").splitlines()[-400:]
                results["relist"]["operator_error_lines_after_apiserver_restart"] = [
                    line[:300] for line in tail if " ERROR " in line or "Traceback" in line
                ][-8:]
                results["restart"]["operator_rss_mib_after_apiserver_restart"] = rss_mib(
                    operator.proc.pid
                )
        finally:
            operator.cleanup()

    document = record(
        "scale",
        "full" if args.full else "quick",
        what=f"{count} FalcoAlerts present: operator start-up, memory, re-list",
        config={
            "alerts": count,
            "per_namespace": PER_NAMESPACE,
            "namespaces": len(namespaces_for(count)),
            "operator": "default settings, admin credentials, all namespaces",
        },
        results=results,
    )
    write("scale", document, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What the benchmarks share: the machine they ran on, writing results, percentiles, process
memory, and the real stack (test control plane, receiver and operator processes).

Every result file (``bench/results/<name>.json``) carries ``benchmark``, ``when`` (UTC),
``commit``, ``mode`` (quick or full), ``machine`` (cores, CPU model, memory, load average) and
the numbers. Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "operator")]
RESULTS = REPO / "bench" / "results"


# --------------------------------------------------------------------------------------------
# The machine and the record
# --------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory and load: what a number means depends on them."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
        )
    except OSError:
        return "unknown"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    head = out.stdout.strip() or "unknown"
    return f"{head}+changes" if dirty else head


def record(name: str, mode: str, **sections: Any) -> dict[str, Any]:
    """The result document for benchmark ``name``; ``sections`` go in as they are."""
    info = machine()
    return {
        "benchmark": name,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "mode": mode,
        "machine": info,
        **sections,
    }


def write(name: str, document: dict[str, Any], out: Path | None = None) -> Path:
    document["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}", flush=True)
    return path


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------


def percentiles(values: Sequence[float], scale: float = 1.0, digits: int = 4) -> dict[str, Any]:
    """count, p50, p90, p99, max and mean of ``values`` (times ``scale``)."""
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * scale, digits)

    return {
        "count": len(ordered),
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "max": round(ordered[-1] * scale, digits),
        "mean": round(statistics.fmean(ordered) * scale, digits),
    }


def rss_mib(pid: int) -> float | None:
    """Resident memory of one process in MiB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of one process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU jiffies of the whole machine so far (from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return float(sum(fields) - idle), float(sum(fields))


def busy_cores(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Cores' worth of CPU the whole machine used between two :func:`machine_busy` readings."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return round((os.cpu_count() or 1) * busy / total, 2) if total else 0.0


def component_pids(cluster: Any) -> dict[str, int]:
    """PIDs of the control plane's processes (etcd, kube-apiserver, ...), found by their
    working directory, which is the control plane's own temporary directory."""
    found: dict[str, int] = {}
    workdir = str(getattr(cluster, "workdir", ""))
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.readlink(proc / "cwd") != workdir:
                continue
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 1:
            found[argv[1].decode(errors="replace")] = int(proc.name)
    return found


# --------------------------------------------------------------------------------------------
# The stack
# --------------------------------------------------------------------------------------------


@contextmanager
def control_plane(namespaces: Sequence[str] = ()) -> Iterator[Any]:
    """The test control plane (built from tests/controlplane unless the environment picks
    another), with the CRDs installed and ``namespaces`` created."""
    from tests.support.controlplane import control_plane_from_env

    with control_plane_from_env(REPO) as cluster:
        cluster.apply_file(REPO / "crds")
        cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        for namespace in namespaces:
            cluster.kubectl("create", "namespace", namespace)
        yield cluster


_WRITE_VERBS = ("POST", "PATCH", "PUT", "DELETE", "APPLY")


def apiserver_stats(cluster: Any) -> dict[str, float]:
    """From the API server's own metrics, all clients: mutating requests served so far, and
    the summed duration and count of FalcoAlert writes (for their mean latency)."""
    text = cluster.kubectl("get", "--raw", "/metrics", timeout=60).stdout
    stats = {"writes": 0.0, "falcoalert_write_seconds": 0.0, "falcoalert_writes": 0.0}
    for line in text.splitlines():
        labels, _, value = line.rpartition(" ")
        write_verb = any(f'verb="{verb}"' in labels for verb in _WRITE_VERBS)
        if line.startswith("apiserver_request_total{") and write_verb:
            stats["writes"] += float(value)
        elif write_verb and 'resource="falcoalerts"' in labels:
            if line.startswith("apiserver_request_duration_seconds_sum{"):
                stats["falcoalert_write_seconds"] += float(value)
            elif line.startswith("apiserver_request_duration_seconds_count{"):
                stats["falcoalert_writes"] += float(value)
    return stats


@contextmanager
def stack(
    cluster: Any,
    operator_namespace: str,
    *,
    receiver: dict[str, Any] | None,
    operator_args: Sequence[str] = (),
    operator_env: dict[str, str] | None = None,
) -> Iterator[tuple[Any, Any]]:
    """A receiver (the chart's receiver RBAC; ``receiver`` holds its settings, None for none)
    and an operator (admin credentials, as the other benchmarks), both real processes."""
    from tests.support.load import ReceiverProcess, receiver_account
    from tests.support.processes import operator_service

    with ExitStack() as stack_:
        rx = None
        if receiver is not None:
            account = stack_.enter_context(receiver_account(cluster, prefix="bench-recv"))
            rx = stack_.enter_context(
                ReceiverProcess(account.kubeconfig, operator_namespace, settings=receiver)
            )
        env = {"FALCO_TRIAGE_NAMESPACE": operator_namespace, **(operator_env or {})}
        op = stack_.enter_context(operator_service(cluster.kubeconfig, *operator_args, env=env))
        yield rx, op

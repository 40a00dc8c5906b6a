"""`make demo`: the whole product on this machine, no cluster needed.

Starts the same local control plane the tests use (or uses the cluster in ``KUBECONFIG``),
runs the operator with the receiver in one process, applies an example DryRun policy, posts the
bundled attack-chain events, then prints ``kubectl get falcoalerts -A`` and one full report.
Ctrl-C (or ``--once``) stops everything it started and removes its temporary files.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.controlplane import (  # noqa: E402 - needs the repository on sys.path
    Cluster,
    ExistingCluster,
    build_controlplane,
    control_plane_from_env,
)
from tests.support.processes import Service, free_port, wait_for  # noqa: E402

NAMESPACE = "shop"
TOKEN = "demo-receiver-token"  # noqa: S105 - a throwaway token for a loopback demo
EVENTS = ROOT / "examples" / "events" / "attack-chain.ndjson"
POLICY = ROOT / "examples" / "policies" / "shell-in-container-dry-run.yaml"
CONTAINER_ID = "containerd://7f1c2a9d3e4b" + "0" * 52
POD_STATUS = {
    "status": {
        "phase": "Running",
        "containerStatuses": [
            {
                "name": "web",
                "image": "docker.io/library/nginx:1.27",
                "imageID": "",
                "containerID": CONTAINER_ID,
                "ready": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": "2026-11-25T10:00:00Z"}},
            }
        ],
    }
}
POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web-7d9f8c6b5-x2k4q", "namespace": NAMESPACE, "labels": {"app": "web"}},
    "spec": {"containers": [{"name": "web", "image": "docker.io/library/nginx:1.27"}]},
}


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


def cluster() -> Cluster:
    kubeconfig = os.environ.get("KUBECONFIG")
    if kubeconfig and Path(kubeconfig).is_file():
        kubectl = shutil.which("kubectl") or str(build_controlplane(ROOT).parent / "kubectl")
        say(f"Using the cluster in KUBECONFIG={kubeconfig}")
        return ExistingCluster(Path(kubeconfig), Path(kubectl))
    say("Starting a local control plane (etcd, kube-apiserver, controller-manager)")
    return control_plane_from_env(ROOT, environ={})


def post_events(url: str) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - loopback http URL built here
        f"{url}/v1/events",
        data=EVENTS.read_bytes(),
        headers={"Content-Type": "application/x-ndjson", "Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
        result: dict[str, Any] = json.loads(resp.read())
        return result


def analyzed(cp: Cluster) -> list[dict[str, Any]] | None:
    items: list[dict[str, Any]] = json.loads(
        cp.kubectl("get", "falcoalerts", "-n", NAMESPACE, "-o", "json").stdout
    )["items"]
    done = [i for i in items if (i.get("status") or {}).get("decision")]
    return items if len(items) == 4 and len(done) == 4 else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="show the result and stop")
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with cluster() as cp:
        say("Installing the CRDs and an example DryRun policy")
        cp.apply_file(ROOT / "crds")
        cp.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        cp.kubectl("create", "namespace", NAMESPACE, check=False)
        cp.kubectl("apply", "-f", "-", input=json.dumps(POD))
        # No kubelet runs here: record the container the example events came from, so the
        # policy's target check (same pod, same container) sees what a real node would report.
        cp.kubectl(
            "patch",
            "pod",
            POD["metadata"]["name"],
            "-n",
            NAMESPACE,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps(POD_STATUS),
        )
        cp.kubectl("apply", "-f", str(POLICY))
        port = free_port()
        env = {
            "KUBECONFIG": str(cp.kubeconfig),
            "PYTHONUNBUFFERED": "1",
            "FALCO_TRIAGE_INGEST__TOKEN": TOKEN,
            "FALCO_TRIAGE_INGEST__HOST": "127.0.0.1",
            "FALCO_TRIAGE_INGEST__PORT": str(port),
            "FALCO_TRIAGE_OPERATOR__METRICS_PORT": str(free_port()),
        }
        liveness = f"http://127.0.0.1:{free_port()}/healthz"
        url = f"http://127.0.0.1:{port}"
        say(f"Starting the operator with the receiver on {url}")
        with Service(
            "operator",
            ["run", "--standalone", "--with-ingest", "--liveness", liveness],
            env,
            health_url=liveness,
        ):
            wait_for(lambda: _ready(f"{url}/readyz"), timeout=60, what="the receiver")
            say(
                f"Posting {EVENTS.relative_to(ROOT)} (shell, secret read, log wiping, "
                "privileged pod)"
            )
            print(json.dumps(post_events(url)))
            wait_for(lambda: analyzed(cp), timeout=90, what="four analyzed alerts")
            say("kubectl get falcoalerts -A")
            print(cp.kubectl("get", "falcoalerts", "-A").stdout)
            name = next(
                i["metadata"]["name"]
                for i in analyzed(cp) or []
                if i["spec"]["rule"] == "Clear Log Activities"
            )
            say(f"falco-triage report {name} -n {NAMESPACE}")
            report = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "falco_triage.cli",
                    "report",
                    name,
                    "-n",
                    NAMESPACE,
                    "--format",
                    "markdown",
                ],
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            print(report.stdout)
            shell = next(
                i for i in analyzed(cp) or [] if i["spec"]["rule"] == "Terminal shell in container"
            )
            decision = shell["status"].get("decision") or {}
            say(f"Decision for the shell alert: {decision.get('summary')}")
            for action in (shell["status"].get("remediation") or {}).get("actions", []):
                print(f"# {action['type']} {action['name']}: {action['result']}")
                print(action.get("planned") or action.get("message", ""))
            if not args.once:
                say(f"Running: KUBECONFIG={cp.kubeconfig} kubectl get fa -A. Ctrl-C stops.")
                with contextlib.suppress(KeyboardInterrupt):
                    stop.wait()
    say("Stopped; nothing left running")
    return 0


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback
            return bool(resp.status == 200)
    except OSError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())

"""The full flow as the chart installs it: the receiver and the operator each run with a token
for their own ServiceAccount, bound only by the chart's default RBAC, and an event posted to the
receiver becomes an analyzed FalcoAlert with a DryRun decision — no Forbidden anywhere."""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.support import response as r
from tests.support import tools
from tests.support.controlplane import Cluster
from tests.support.processes import Service, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
TOKEN = "chart-flow-token-0123456789"


def _rbac(release: str, namespace: str) -> list[dict[str, Any]]:
    rendered = tools.run_helm(
        ROOT, "template", release, str(tools.CHART_DIR), "--namespace", namespace
    ).stdout
    return [d for d in yaml.safe_load_all(rendered) if d and d["kind"] in RBAC_KINDS]


def _event(namespace: str) -> bytes:
    event = json.loads((ROOT / "examples" / "events" / "terminal-shell.json").read_text())
    event["output_fields"]["k8s.ns.name"] = namespace
    event["output_fields"]["k8s.pod.name"] = "web-0"
    return json.dumps(event).encode()


def test_receiver_and_operator_with_the_charts_rbac(control_plane: Cluster) -> None:
    release_ns = r.new_namespace(control_plane, "ft-chart")
    workload_ns = r.new_namespace(control_plane, "ft-shop")
    release = f"ft-{uuid.uuid4().hex[:6]}"
    rbac = _rbac(release, release_ns)
    r.create(control_plane, *rbac)
    accounts = {d["metadata"]["name"] for d in rbac if d["kind"] == "ServiceAccount"}
    operator_sa = next(a for a in accounts if a.endswith("-operator"))
    receiver_sa = next(a for a in accounts if a.endswith("-receiver"))

    def kubeconfig(sa: str) -> Path:
        return control_plane.kubeconfig_for_token(control_plane.create_token(release_ns, sa), sa)

    r.create_pod(control_plane, workload_ns, "web-0", labels={"app": "web"})
    # No kubelet here: report the container the event names, as a node would.
    control_plane.kubectl(
        "patch",
        "pod",
        "web-0",
        "-n",
        workload_ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(
            {
                "status": {
                    "containerStatuses": [
                        {
                            "name": "app",
                            "image": "registry.example/app:1",
                            "imageID": "",
                            "ready": True,
                            "restartCount": 0,
                            "containerID": "containerd://7f1c2a9d3e4b" + "0" * 52,
                            "state": {"running": {"startedAt": "2026-11-25T10:00:00Z"}},
                        }
                    ]
                }
            }
        ),
    )
    r.create(
        control_plane,
        r.policy("label-shells", workload_ns, [r.label_action(quarantine="true")], mode="DryRun"),
    )
    port = free_port()
    receiver_env = {
        "KUBECONFIG": str(kubeconfig(receiver_sa)),
        "FALCO_TRIAGE_NAMESPACE": release_ns,
        "FALCO_TRIAGE_INGEST__TOKEN": TOKEN,
        "FALCO_TRIAGE_INGEST__HOST": "127.0.0.1",
        "FALCO_TRIAGE_INGEST__PORT": str(port),
    }
    url = f"http://127.0.0.1:{port}"
    try:
        with (
            Service("receiver", ["ingest"], receiver_env, health_url=f"{url}/readyz") as receiver,
            r.response_operator(
                control_plane, release_ns, kubeconfig=kubeconfig(operator_sa)
            ) as operator,
        ):
            request = urllib.request.Request(  # noqa: S310 - loopback URL built here
                f"{url}/v1/events",
                data=_event(workload_ns),
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
                assert resp.status in (200, 202)
            alert = wait_for(
                lambda: next(iter(r.items(control_plane, "falcoalerts", workload_ns)), None),
                timeout=r.RESPONSE_TIMEOUT,
                what="the receiver to create the FalcoAlert",
            )
            name = alert["metadata"]["name"]
            status = r.wait_for_phase(control_plane, workload_ns, name, "DryRun")
            logs = receiver.log(2000) + operator.log(2000)
        assert status["analysis"]["rule"] == "Terminal shell in container"
        assert status["decision"]["outcome"] == "Matched"
        (record,) = r.records(status).values()
        assert record["result"] == "Planned"
        assert "quarantine: 'true'" in record["planned"]
        assert r.pod_labels(control_plane, workload_ns, "web-0") == {"app": "web"}
        assert "forbidden" not in logs.lower(), "an RBAC denial with the chart's permissions"
    finally:
        for doc in rbac:
            if doc["kind"].startswith("Cluster"):
                r.delete(control_plane, doc["kind"].lower(), doc["metadata"]["name"])
        r.delete(control_plane, "namespace", release_ns)
        r.delete(control_plane, "namespace", workload_ns)

"""The operator, run as `falco-triage run` against the real API server, analyzes a new
FalcoAlert within seconds: status.analysis, status.report, phase, an Analyzed condition and a
Kubernetes Event; the reanalyze annotation triggers a fresh analysis."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.support.controlplane import Cluster
from tests.support.processes import Service, operator_service, wait_for

# Analysis is milliseconds; the rest is watch latency. 30 s flags a real problem, not load.
ANALYZED_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def operator(control_plane: Cluster) -> Iterator[Service]:
    with operator_service(control_plane.kubeconfig) as svc:
        yield svc


def _alert(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "falcotriage.io/v1alpha1",
        "kind": "FalcoAlert",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "rule": "Terminal shell in container",
            "priority": "Notice",
            "source": "syscall",
            "time": "2026-11-25T10:21:04Z",
            "hostname": "worker-1",
            "outputFields": {
                "proc.name": "bash",
                "proc.pname": "runc",
                "user.name": "root",
                "user.uid": "0",
                "proc.cmdline": "bash",
                "k8s.ns.name": namespace,
                "k8s.pod.name": "web-0",
                "container.id": "7f1c2a9d3e4b",
                "container.name": "web",
                "container.image.repository": "nginx",
            },
            "tags": ["container", "shell", "mitre_execution", "T1059"],
            "fingerprint": "cd" * 32,
            "target": {
                "kind": "Pod",
                "display": f"{namespace}/web-0",
                "namespace": namespace,
                "pod": "web-0",
                "containerName": "web",
            },
        },
    }


def _status(cluster: Cluster, name: str, namespace: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "falcoalert", name, "-n", namespace, "-o", "json").stdout
    status: dict[str, Any] = json.loads(out).get("status") or {}
    return status


def test_new_alert_is_analyzed(control_plane: Cluster, operator: Service, namespace: str) -> None:
    control_plane.kubectl("create", "-f", "-", input=yaml.safe_dump(_alert("shell", namespace)))
    status = wait_for(
        lambda: (s := _status(control_plane, "shell", namespace)).get("analysis") and s,
        timeout=ANALYZED_TIMEOUT,
        what="status.analysis",
    )
    assert status["phase"] in ("Analyzed", "NoAction")  # NoAction: no policy here
    analysis = status["analysis"]
    assert analysis["knownRule"] is True
    assert analysis["where"]["pod"] == "web-0"
    assert [t["id"] for t in analysis["mitre"]["techniques"]] == ["T1059"]
    report = status["report"]
    assert report.startswith("# Falco alert: Terminal shell in container")
    assert namespace in report  # investigation commands carry the real namespace
    assert "{namespace}" not in report
    (cond,) = [c for c in status["conditions"] if c["type"] == "Analyzed"]
    assert cond["status"] == "True"

    events = wait_for(
        lambda: json.loads(
            control_plane.kubectl(
                "get",
                "events",
                "-n",
                namespace,
                "--field-selector",
                "involvedObject.name=shell,reason=Analyzed",
                "-o",
                "json",
            ).stdout
        )["items"],
        timeout=ANALYZED_TIMEOUT,
        what="the Analyzed event",
    )
    assert "Terminal shell in container" in events[0]["message"]


def test_report_command_prints_the_stored_report(
    control_plane: Cluster, operator: Service, namespace: str
) -> None:
    """`falco-triage report NAME -n NS` reads the cluster in KUBECONFIG and prints the report."""
    control_plane.kubectl("create", "-f", "-", input=yaml.safe_dump(_alert("printed", namespace)))
    wait_for(
        lambda: _status(control_plane, "printed", namespace).get("report"),
        timeout=ANALYZED_TIMEOUT,
        what="status.report",
    )
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig)}
    out = subprocess.run(
        ["falco-triage", "report", "printed", "-n", namespace, "--format", "markdown"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out == _status(control_plane, "printed", namespace)["report"]
    missing = subprocess.run(
        ["falco-triage", "report", "absent", "-n", namespace],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 1
    assert "not found" in missing.stderr


def test_reanalyze_annotation_triggers_analysis(
    control_plane: Cluster, operator: Service, namespace: str
) -> None:
    control_plane.kubectl("create", "-f", "-", input=yaml.safe_dump(_alert("again", namespace)))
    first = wait_for(
        lambda: _status(control_plane, "again", namespace).get("conditions"),
        timeout=ANALYZED_TIMEOUT,
        what="first analysis",
    )
    control_plane.kubectl(
        "annotate", "falcoalert", "again", "-n", namespace, "falcotriage.io/reanalyze=1"
    )
    wait_for(
        lambda: any(
            "requested by annotation" in c["message"]
            for c in _status(control_plane, "again", namespace)["conditions"]
        ),
        timeout=ANALYZED_TIMEOUT,
        what="re-analysis",
    )
    assert first

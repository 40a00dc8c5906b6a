"""Two operator replicas coordinate through kopf peering: only the highest-priority one acts,
and when it is killed (SIGKILL) the standby takes over once the peering record expires."""

from __future__ import annotations

import json
from typing import Any

import yaml

from tests.support.controlplane import Cluster
from tests.support.processes import operator_service, wait_for

LIFETIME = 10  # seconds; the standby resumes after the active one's record is this old
PEERING = "falco-triage-ha-test"


def _alert(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "falcotriage.io/v1alpha1",
        "kind": "FalcoAlert",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "rule": "Clear Log Activities",
            "priority": "Warning",
            "source": "syscall",
            "time": "2026-11-25T10:24:40Z",
            "hostname": "worker-1",
            "outputFields": {"fd.name": "/var/log/dpkg.log", "proc.name": "bash"},
            "tags": ["mitre_defense_evasion", "T1070"],
            "fingerprint": "ab" * 32,
            "target": {"kind": "Host", "display": "worker-1", "node": "worker-1"},
        },
    }


def _analyzed(cluster: Cluster, name: str, namespace: str) -> bool:
    out = cluster.kubectl("get", "falcoalert", name, "-n", namespace, "-o", "json").stdout
    return bool((json.loads(out).get("status") or {}).get("analysis"))


def test_standby_takes_over_when_active_is_killed(control_plane: Cluster, namespace: str) -> None:
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump(
            {
                "apiVersion": "kopf.dev/v1",
                "kind": "ClusterKopfPeering",
                "metadata": {"name": PEERING},
            }
        ),
    )
    env = {"FALCO_TRIAGE_OPERATOR__PEERING_LIFETIME_SECONDS": str(LIFETIME)}
    common = ("--peering-name", PEERING)
    active = operator_service(
        control_plane.kubeconfig,
        *common,
        "--priority",
        "200",
        env=env,
        standalone=False,
        name="active",
    )
    standby = operator_service(
        control_plane.kubeconfig,
        *common,
        "--priority",
        "100",
        env=env,
        standalone=False,
        name="standby",
    )
    with active, standby:
        # NB: kopf starts every replica paused and logs only when one resumes.
        wait_for(
            lambda: "Resuming operations" in active.log(400),
            timeout=60,
            what="the highest-priority replica to become active",
        )
        control_plane.kubectl("create", "-f", "-", input=yaml.safe_dump(_alert("one", namespace)))
        wait_for(
            lambda: _analyzed(control_plane, "one", namespace),
            timeout=30,
            what="the active replica to analyze the first alert",
        )
        assert "Analyzed: " not in standby.log(400)
        assert "Resuming operations" not in standby.log(400)

        active.kill()
        control_plane.kubectl("create", "-f", "-", input=yaml.safe_dump(_alert("two", namespace)))
        wait_for(
            lambda: _analyzed(control_plane, "two", namespace),
            timeout=LIFETIME * 6,
            what="the standby to take over and analyze the second alert",
        )
        assert "Resuming operations" in standby.log(400)

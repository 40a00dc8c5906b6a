"""Retention on the real API server: the operator deletes alerts not seen within max age and
trims a namespace over its cap to the newest, settled alerts first."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import yaml

from tests.support.controlplane import Cluster
from tests.support.processes import operator_service, wait_for


def _create(cluster: Cluster, namespace: str, name: str, seen: datetime, phase: str) -> None:
    stamp = seen.strftime("%Y-%m-%dT%H:%M:%SZ")
    alert = {
        "apiVersion": "falcotriage.io/v1alpha1",
        "kind": "FalcoAlert",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "rule": "Unknown custom rule",
            "priority": "Debug",
            "source": "syscall",
            "time": stamp,
            "fingerprint": "ef" * 32,
            "target": {"kind": "Host", "display": "node-1", "node": "node-1"},
        },
    }
    cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(alert))
    status = {
        "status": {
            "phase": phase,
            "occurrences": {"count": 1, "firstSeen": stamp, "lastSeen": stamp},
        }
    }
    cluster.kubectl(
        "patch",
        "falcoalert",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )


def _names(cluster: Cluster, namespace: str) -> set[str]:
    out = cluster.kubectl("get", "falcoalerts", "-n", namespace, "-o", "name").stdout
    return {line.rsplit("/", 1)[1] for line in out.split()}


def test_expired_and_excess_alerts_are_deleted(control_plane: Cluster, namespace: str) -> None:
    now = datetime.now(UTC)
    _create(control_plane, namespace, "expired", now - timedelta(days=2), "Analyzed")
    _create(control_plane, namespace, "active-old", now - timedelta(hours=5), "Remediated")
    _create(control_plane, namespace, "rolled-back", now - timedelta(minutes=1), "RolledBack")
    _create(control_plane, namespace, "newest", now, "Analyzed")
    env = {
        "FALCO_TRIAGE_OPERATOR__RETENTION__MAX_AGE": "1d",
        "FALCO_TRIAGE_OPERATOR__RETENTION__MAX_PER_NAMESPACE": "2",
        "FALCO_TRIAGE_OPERATOR__RETENTION__SWEEP_INTERVAL_SECONDS": "1",
    }
    with operator_service(control_plane.kubeconfig, env=env):
        remaining = wait_for(
            lambda: (
                _names(control_plane, namespace)
                if len(_names(control_plane, namespace)) == 2
                else None
            ),
            timeout=60,
            what="retention to trim the namespace to 2 alerts",
        )
    assert remaining == {"active-old", "newest"}

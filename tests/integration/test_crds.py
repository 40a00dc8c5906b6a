"""Our generated CRDs on the real API server: accepted, validating, with a working status
subresource and the printer columns `kubectl get falcoalerts` shows."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.support.controlplane import Cluster, KubectlError

FINGERPRINT = "ab" * 32


def _alert(name: str, namespace: str, **spec_overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "rule": "Terminal shell in container",
        "priority": "Notice",
        "source": "syscall",
        "time": "2026-11-25T10:00:00Z",
        "hostname": "node-1",
        "output": "A shell was spawned in a container with an attached terminal",
        "outputFields": {"proc.name": "bash", "user.uid": "0", "proc.tty": None},
        "tags": ["container", "shell", "mitre_execution", "T1059"],
        "fingerprint": FINGERPRINT,
        "target": {
            "kind": "Pod",
            "display": f"{namespace}/web-0",
            "namespace": namespace,
            "pod": "web-0",
            "containerName": "web",
        },
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "falcotriage.io/v1alpha1",
        "kind": "FalcoAlert",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def _create(cluster: Cluster, obj: dict[str, Any]) -> None:
    cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(obj))


def _get(cluster: Cluster, kind: str, name: str, namespace: str) -> dict[str, Any]:
    out = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout
    result: dict[str, Any] = json.loads(out)
    return result


def test_crds_are_established(control_plane: Cluster) -> None:
    """Our three CRDs are accepted by the API server and serve their resources."""
    out = control_plane.kubectl("api-resources", "--api-group=falcotriage.io", "-o", "name").stdout
    assert set(out.split()) == {
        "falcoalerts.falcotriage.io",
        "responsepolicies.falcotriage.io",
        "clusterresponsepolicies.falcotriage.io",
    }


def test_valid_alert_is_created(control_plane: Cluster, namespace: str) -> None:
    _create(control_plane, _alert("shell-1", namespace))
    got = _get(control_plane, "falcoalert", "shell-1", namespace)
    assert got["spec"]["outputFields"] == {"proc.name": "bash", "user.uid": "0", "proc.tty": None}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"priority": "Bogus"}, 'spec.priority: Unsupported value: "Bogus"'),
        ({"fingerprint": "not-hex"}, "spec.fingerprint: Invalid value"),
        ({"rule": ""}, "spec.rule: Invalid value"),
    ],
)
def test_invalid_alert_is_rejected_with_a_clear_message(
    control_plane: Cluster, namespace: str, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(KubectlError) as err:
        _create(control_plane, _alert("bad", namespace, **overrides))
    assert message in err.value.stderr
    absent = control_plane.kubectl(
        "get", "falcoalerts", "-n", namespace, "-o", "name"
    ).stdout.strip()
    assert absent == ""


def test_status_subresource_is_separate_from_spec(control_plane: Cluster, namespace: str) -> None:
    """A spec update leaves status alone and a status update leaves spec alone."""
    _create(control_plane, _alert("shell-2", namespace))
    status = {
        "status": {
            "phase": "Analyzed",
            "occurrences": {
                "count": 3,
                "firstSeen": "2026-11-25T10:00:00Z",
                "lastSeen": "2026-11-25T10:05:00Z",
            },
        }
    }
    control_plane.kubectl(
        "patch",
        "falcoalert",
        "shell-2",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({**status, "spec": {"rule": "changed via status"}}),
    )
    got = _get(control_plane, "falcoalert", "shell-2", namespace)
    assert got["status"]["occurrences"]["count"] == 3
    assert got["spec"]["rule"] == "Terminal shell in container"

    control_plane.kubectl(
        "patch",
        "falcoalert",
        "shell-2",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"priority": "Critical"}, "status": {"phase": "Failed"}}),
    )
    got = _get(control_plane, "falcoalert", "shell-2", namespace)
    assert got["spec"]["priority"] == "Critical"
    assert got["status"]["phase"] == "Analyzed"


def test_kubectl_get_shows_printer_columns(control_plane: Cluster, namespace: str) -> None:
    _create(control_plane, _alert("shell-3", namespace))
    control_plane.kubectl(
        "patch",
        "falcoalert",
        "shell-3",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(
            {
                "status": {
                    "phase": "DryRun",
                    "decision": {"outcome": "Matched", "summary": "isolatePod (DryRun)"},
                    "occurrences": {
                        "count": 7,
                        "firstSeen": "2026-11-25T10:00:00Z",
                        "lastSeen": "2026-11-25T10:05:00Z",
                    },
                }
            }
        ),
    )
    out = control_plane.kubectl("get", "falcoalerts", "-A").stdout
    header, *rows = out.splitlines()
    assert header.split() == [
        "NAMESPACE",
        "NAME",
        "RULE",
        "PRIORITY",
        "TARGET",
        "COUNT",
        "PHASE",
        "ACTION",
        "AGE",
    ]
    row = next(r for r in rows if "shell-3" in r)
    for value in (
        "Terminal shell in container",
        "Notice",
        f"{namespace}/web-0",
        "7",
        "DryRun",
        "isolatePod (DryRun)",
    ):
        assert value in row
    short = control_plane.kubectl("get", "fa", "-n", namespace, "-o", "name").stdout
    assert "falcoalert.falcotriage.io/shell-3" in short


def test_policy_action_must_set_exactly_one_type(control_plane: Cluster, namespace: str) -> None:
    """The CEL rule in the CRD rejects an action with two types, naming the allowed ones."""
    policy = {
        "apiVersion": "falcotriage.io/v1alpha1",
        "kind": "ResponsePolicy",
        "metadata": {"name": "two-types", "namespace": namespace},
        "spec": {
            "match": {"rules": ["Terminal shell in container"]},
            "mode": "DryRun",
            "actions": [
                {
                    "name": "both",
                    "labelPod": {"labels": {"a": "b"}},
                    "deletePod": {"gracePeriodSeconds": 5},
                }
            ],
        },
    }
    with pytest.raises(KubectlError) as err:
        _create(control_plane, policy)
    assert "each action sets exactly one of" in err.value.stderr
    policy["metadata"]["name"] = "one-type"
    del policy["spec"]["actions"][0]["deletePod"]
    _create(control_plane, policy)
    got = _get(control_plane, "responsepolicy", "one-type", namespace)
    assert got["spec"]["actions"][0]["continueOnError"] is False  # defaulted by the API server

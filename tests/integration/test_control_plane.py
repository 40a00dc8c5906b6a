"""The test control plane is a real Kubernetes control plane, not a stub.

Proves what later integration and fault tests lean on: the API server is ready and is the
pinned Kubernetes version, kube-controller-manager runs (ownerReference garbage collection
happens), RBAC is enforced for ServiceAccount tokens, and the API server can be stopped and
restarted without losing data.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import pytest

from tests.support.controlplane import Cluster

REPO_ROOT = Path(__file__).resolve().parents[2]

# Garbage collection of a dependent normally takes well under a second; the controller's
# informers may need a few more right after start-up. A minute means it is not running.
GC_TIMEOUT = 60.0


def _configmap(name: str, namespace: str, owner: dict[str, str] | None = None) -> str:
    metadata: dict[str, object] = {"name": name, "namespace": namespace}
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata})


def test_readyz_is_ok(control_plane: Cluster) -> None:
    """kube-apiserver answers ok on /readyz through our kubectl."""
    result = control_plane.kubectl("get", "--raw", "/readyz")
    assert result.stdout.strip() == "ok"


def test_built_server_reports_pinned_version(control_plane: Cluster) -> None:
    """The built API server reports the Kubernetes version pinned in tests/controlplane/go.mod."""
    if control_plane.mode != "built":
        pytest.skip(f"the server's version is not ours to pin in {control_plane.mode} mode")
    go_mod = (REPO_ROOT / "tests" / "controlplane" / "go.mod").read_text()
    pinned = re.search(r"^\s*k8s\.io/kubernetes (v\S+)$", go_mod, re.M)
    assert pinned is not None
    version = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == pinned.group(1)
    assert version["clientVersion"]["gitVersion"] == pinned.group(1)


def test_deleting_owner_garbage_collects_dependent(control_plane: Cluster, namespace: str) -> None:
    """A ConfigMap owned by another is deleted with it: kube-controller-manager's GC runs."""
    if not control_plane.has_controller_manager:
        pytest.xfail(f"{control_plane.mode} mode runs no kube-controller-manager, so no GC")
    control_plane.kubectl("create", "-f", "-", input=_configmap("owner", namespace))
    uid = control_plane.kubectl(
        "get", "configmap", "owner", "-n", namespace, "-o", "jsonpath={.metadata.uid}"
    ).stdout
    owner_ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
    control_plane.kubectl("create", "-f", "-", input=_configmap("owned", namespace, owner_ref))

    control_plane.kubectl("delete", "configmap", "owner", "-n", namespace)

    deadline = time.monotonic() + GC_TIMEOUT
    while True:
        result = control_plane.kubectl(
            "get", "configmap", "owned", "-n", namespace, "--ignore-not-found", "-o", "name"
        )
        if result.stdout.strip() == "":
            break
        assert time.monotonic() < deadline, f"owned ConfigMap still there after {GC_TIMEOUT} s"
        time.sleep(0.2)


def test_service_account_without_binding_is_forbidden(
    control_plane: Cluster, namespace: str
) -> None:
    """A ServiceAccount's token authenticates, but with no RoleBinding RBAC denies listing pods."""
    control_plane.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = control_plane.create_token(namespace, "nobody", duration="10m")
    kubeconfig = control_plane.kubeconfig_for_token(token, f"{namespace}-nobody")

    whoami = control_plane.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}",
                                   kubeconfig=kubeconfig)  # fmt: skip
    assert whoami.stdout == f"system:serviceaccount:{namespace}:nobody"

    result = control_plane.kubectl(
        "get", "pods", "-n", namespace, kubeconfig=kubeconfig, check=False
    )
    assert result.returncode != 0
    assert "Forbidden" in result.stderr
    assert f"system:serviceaccount:{namespace}:nobody" in result.stderr


def test_apiserver_restart_keeps_data(control_plane: Cluster, namespace: str) -> None:
    """Stopping and restarting only kube-apiserver keeps what etcd stored."""
    if not control_plane.can_restart_apiserver:
        pytest.skip(f"the API server is not ours to restart in {control_plane.mode} mode")
    marker = uuid.uuid4().hex
    control_plane.kubectl(
        "create", "configmap", "survivor", "-n", namespace, f"--from-literal=marker={marker}"
    )

    control_plane.stop_apiserver()
    down = control_plane.kubectl("get", "--raw", "/readyz", check=False, timeout=30)
    assert down.returncode != 0, "the API server still answers after stop_apiserver()"
    control_plane.start_apiserver()

    result = control_plane.kubectl(
        "get", "configmap", "survivor", "-n", namespace, "-o", "jsonpath={.data.marker}"
    )
    assert result.stdout == marker

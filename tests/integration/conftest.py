"""Fixtures for tests against a real Kubernetes API.

The session-wide ``control_plane`` comes from :func:`control_plane_from_env`: by default our own
etcd, kube-apiserver and kube-controller-manager, built from ``tests/controlplane`` (minutes the
first time, seconds after); ``KUBEBUILDER_ASSETS`` or ``FALCO_TRIAGE_TEST_KUBECONFIG`` choose
envtest binaries or an existing cluster instead. Falco Triage's CRDs from ``crds/`` are
installed once, when there are any.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.controlplane import Cluster, control_plane_from_env

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT / "crds"
_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # NB: this hook sees every collected item of the session, not only this directory's.
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[Cluster]:
    """A running cluster with Falco Triage's CRDs installed, shared by the whole session."""
    cluster = control_plane_from_env(REPO_ROOT)
    with cluster:
        if sorted(CRD_DIR.glob("*.yaml")):
            cluster.apply_file(CRD_DIR)
            cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        yield cluster


@pytest.fixture
def namespace(control_plane: Cluster) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting for it to go)."""
    name = f"ft-test-{uuid.uuid4().hex[:10]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    # NB: --wait=false: envtest has no namespace controller, so deletion would never finish.
    control_plane.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")

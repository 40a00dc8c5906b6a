"""Status patches for our custom resources, outside kopf's own end-of-handler patch.

Used where a handler must publish one result before it starts slower work (the deterministic
report before a model is asked for a narrative).
"""

from __future__ import annotations

from typing import Any

from kubernetes import client

from falco_triage.k8s.errors import translated
from falco_triage.models.common import GROUP, VERSION

FIELD_MANAGER = "falco-triage-operator"


def patch_status(
    api: client.ApiClient, plural: str, namespace: str | None, name: str, status: dict[str, Any]
) -> None:
    """Merge-patch ``status`` of one object (namespaced, or cluster-scoped when no namespace)."""
    objects = client.CustomObjectsApi(api)
    body = {"status": status}
    with translated(write=True):
        if namespace is None:
            objects.patch_cluster_custom_object_status(
                GROUP,
                VERSION,
                plural,
                name,
                body,
                field_manager=FIELD_MANAGER,
                _request_timeout=30,
            )
        else:
            objects.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
                body,
                field_manager=FIELD_MANAGER,
                _request_timeout=30,
            )

"""Plain JSON requests to any Kubernetes API path, through the kubernetes client's transport.

The typed client methods turn every body into generated models and back; remediation works
with the objects and patches the pure planner built, as plain JSON, and reads pods and
ReplicaSets as the planner expects them (camelCase dicts, exactly as the API server sent
them). This module sends such requests with the client's own configuration (credentials,
TLS, connection pool), and translates failures once, at this edge
(:mod:`falco_triage.k8s.errors`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from falco_triage.k8s.errors import translated

MERGE_PATCH = "application/merge-patch+json"
JSON = "application/json"
# (connect, read) seconds: a healthy API server answers in milliseconds; a hung one must not
# hold a response (and the alert's handler) for longer than this.
DEFAULT_TIMEOUT = (5.0, 30.0)


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the API: ``group`` ("" for core), ``version`` and ``plural``."""

    group: str
    version: str
    plural: str

    @property
    def display(self) -> str:
        """``pods``, ``networking.k8s.io/networkpolicies``: how RBAC rules name it."""
        return f"{self.group}/{self.plural}" if self.group else self.plural

    def path(
        self, namespace: str | None, name: str | None = None, subresource: str | None = None
    ) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name, safe='')}"
            if subresource:
                base += f"/{subresource}"
        return base


# The kinds remediation reads or writes, by (apiVersion, kind).
RESOURCES: dict[tuple[str, str], Resource] = {
    ("v1", "Pod"): Resource("", "v1", "pods"),
    ("v1", "Event"): Resource("", "v1", "events"),
    ("v1", "Secret"): Resource("", "v1", "secrets"),
    ("networking.k8s.io/v1", "NetworkPolicy"): Resource(
        "networking.k8s.io", "v1", "networkpolicies"
    ),
    ("apps/v1", "ReplicaSet"): Resource("apps", "v1", "replicasets"),
    ("apps/v1", "Deployment"): Resource("apps", "v1", "deployments"),
    ("apps/v1", "StatefulSet"): Resource("apps", "v1", "statefulsets"),
    ("falcotriage.io/v1alpha1", "FalcoAlert"): Resource(
        "falcotriage.io", "v1alpha1", "falcoalerts"
    ),
    ("falcotriage.io/v1alpha1", "ResponsePolicy"): Resource(
        "falcotriage.io", "v1alpha1", "responsepolicies"
    ),
    ("falcotriage.io/v1alpha1", "ClusterResponsePolicy"): Resource(
        "falcotriage.io", "v1alpha1", "clusterresponsepolicies"
    ),
}


def resource_for(api_version: str, kind: str) -> Resource:
    try:
        return RESOURCES[(api_version, kind)]
    except KeyError:
        raise ValueError(f"remediation does not handle {api_version} {kind}") from None


class RestClient:
    """JSON in, JSON out. Blocking: call it from a worker thread, never from the event loop."""

    def __init__(
        self, api: client.ApiClient, *, timeout: tuple[float, float] = DEFAULT_TIMEOUT
    ) -> None:
        self.api = api
        self._timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = JSON,
    ) -> dict[str, Any]:
        """Send one request; the decoded JSON answer, or an :class:`ApiError` subclass."""
        headers = {"Accept": JSON}
        if body is not None:
            headers["Content-Type"] = content_type
        serialized = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        with translated(write=method != "GET"):
            response = self.api.call_api(*serialized, _request_timeout=self._timeout)
            response.read()  # type: ignore[no-untyped-call]  # untyped in the client
            if not 200 <= response.status <= 299:
                raise ApiException.from_response(http_resp=response, body=None, data=None)
        data = response.data
        if not data:
            return {}
        decoded = json.loads(data)
        return decoded if isinstance(decoded, dict) else {}

    def get(self, path: str) -> dict[str, Any]:
        return self.request("GET", path)

    def create(self, path: str, body: Mapping[str, Any], *, field_manager: str) -> dict[str, Any]:
        return self.request("POST", path, body=dict(body), query={"fieldManager": field_manager})

    def merge_patch(
        self, path: str, body: Mapping[str, Any], *, field_manager: str
    ) -> dict[str, Any]:
        return self.request(
            "PATCH",
            path,
            body=dict(body),
            query={"fieldManager": field_manager},
            content_type=MERGE_PATCH,
        )

    def delete(self, path: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self.request("DELETE", path, body=dict(options) if options else None)

"""Factories and probes for the response tests: pods, workloads, alerts, policies, and reads.

Everything goes through real ``kubectl`` against the test control plane. Pods are created
directly and never scheduled (no scheduler runs): they exist, with labels and owners, which is
all the actions need. A Deployment's ReplicaSet and pods are created by hand with
ownerReferences, since no deployment controller runs either::

    cluster = control_plane
    pod = create_pod(cluster, ns, "web-0", labels={"app": "web"})
    create_policy(cluster, policy("isolate", ns, [isolate_action()], mode="Enforce"))
    create_alert(cluster, alert("shell", ns, "web-0"))
    status = wait_for_phase(cluster, ns, "shell", "Remediated")
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.support.controlplane import Cluster
from tests.support.processes import Service, operator_service, wait_for

API_VERSION = "falcotriage.io/v1alpha1"
RULE = "Terminal shell in container"
# Watch latency plus a few API calls per action; 30 s means something is broken, not slow.
RESPONSE_TIMEOUT = 30.0


# -- objects -----------------------------------------------------------------------------------


def pod(
    name: str,
    namespace: str,
    *,
    labels: Mapping[str, str] | None = None,
    owner: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A pod with one container; ``owner`` (apiVersion, kind, name, uid) makes it controlled."""
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": dict(labels or {"app": "web"}),
    }
    if owner is not None:
        metadata["ownerReferences"] = [{**owner, "controller": True, "blockOwnerDeletion": False}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
    }


def alert(
    name: str,
    namespace: str,
    pod_name: str | None,
    *,
    rule: str = RULE,
    priority: str = "Critical",
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A FalcoAlert as the receiver writes it; ``pod_name=None`` makes it a host alert."""
    if pod_name is None:
        target: dict[str, Any] = {"kind": "Host", "display": "worker-1", "node": "worker-1"}
    else:
        target = {
            "kind": "Pod",
            "display": f"{namespace}/{pod_name}",
            "namespace": namespace,
            "pod": pod_name,
            "containerName": "app",
            "node": "worker-1",
        }
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": API_VERSION,
        "kind": "FalcoAlert",
        "metadata": metadata,
        "spec": {
            "rule": rule,
            "priority": priority,
            "source": "syscall",
            "time": "2026-11-25T10:21:04Z",
            "hostname": "worker-1",
            "outputFields": {"proc.name": "bash", "k8s.ns.name": namespace},
            "tags": ["container", "shell", "mitre_execution", "T1059"],
            "fingerprint": hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest(),
            "target": target,
        },
    }


def policy(
    name: str,
    namespace: str | None,
    actions: Sequence[Mapping[str, Any]],
    *,
    mode: str = "Enforce",
    match: Mapping[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A ResponsePolicy in ``namespace``, or a ClusterResponsePolicy when it is None."""
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "apiVersion": API_VERSION,
        "kind": "ResponsePolicy" if namespace is not None else "ClusterResponsePolicy",
        "metadata": metadata,
        "spec": {
            "mode": mode,
            "match": dict(match or {"rules": [RULE]}),
            "actions": [dict(a) for a in actions],
            **spec,
        },
    }


def label_action(name: str = "label", **labels: str) -> dict[str, Any]:
    return {"name": name, "labelPod": {"labels": labels or {"falcotriage.io/quarantine": "true"}}}


def annotate_action(name: str = "annotate", **annotations: str) -> dict[str, Any]:
    values = annotations or {"falcotriage.io/reason": "falco alert"}
    return {"name": name, "annotatePod": {"annotations": values}}


def isolate_action(name: str = "isolate", **options: Any) -> dict[str, Any]:
    return {"name": name, "isolatePod": options}


def delete_action(name: str = "delete", **options: Any) -> dict[str, Any]:
    return {"name": name, "deletePod": options}


def scale_action(name: str = "scale", **options: Any) -> dict[str, Any]:
    return {"name": name, "scaleWorkload": options}


def notify_action(name: str = "notify", **options: Any) -> dict[str, Any]:
    return {"name": name, "notify": options or {"event": True}}


# -- writes ------------------------------------------------------------------------------------


def create(cluster: Cluster, *objects: Mapping[str, Any]) -> None:
    documents = "---\n".join(yaml.safe_dump(dict(o)) for o in objects)
    cluster.kubectl("create", "-f", "-", input=documents)


def create_pod(cluster: Cluster, namespace: str, name: str, **kwargs: Any) -> dict[str, Any]:
    create(cluster, pod(name, namespace, **kwargs))
    found: dict[str, Any] | None = get(cluster, "pod", name, namespace)
    assert found is not None
    return found


def create_deployment(
    cluster: Cluster, namespace: str, name: str, *, replicas: int = 2
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Deployment, its ReplicaSet and one pod, linked by ownerReferences: (deployment, pod)."""
    labels = {"app": name}
    template = {
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
    }
    create(
        cluster,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": template,
            },
        },
    )
    deployment = get(cluster, "deployment", name, namespace)
    assert deployment is not None
    owner = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": name,
        "uid": deployment["metadata"]["uid"],
        "controller": True,
    }
    rs_name = f"{name}-5d8f7c9b6"
    create(
        cluster,
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": rs_name,
                "namespace": namespace,
                "labels": labels,
                "ownerReferences": [owner],
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": template,
            },
        },
    )
    replica_set = get(cluster, "replicaset", rs_name, namespace)
    assert replica_set is not None
    rs_owner = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": rs_name,
        "uid": replica_set["metadata"]["uid"],
    }
    made = create_pod(cluster, namespace, f"{rs_name}-x2k4q", labels=labels, owner=rs_owner)
    return deployment, made


def create_secret(cluster: Cluster, namespace: str, name: str, **data: str) -> None:
    args = [f"--from-literal={key}={value}" for key, value in data.items()]
    cluster.kubectl("create", "secret", "generic", name, "-n", namespace, *args)


def delete(cluster: Cluster, kind: str, name: str, namespace: str | None = None) -> None:
    where = ["-n", namespace] if namespace else []
    cluster.kubectl("delete", kind, name, *where, "--wait=false", "--ignore-not-found")


def annotate(cluster: Cluster, namespace: str, name: str, annotation: str) -> None:
    cluster.kubectl("annotate", "falcoalert", name, "-n", namespace, annotation)


# -- reads -------------------------------------------------------------------------------------


def get(cluster: Cluster, kind: str, name: str, namespace: str | None = None) -> Any:
    """The object as JSON, or None when it does not exist."""
    where = ["-n", namespace] if namespace else []
    result = cluster.kubectl(
        "get", kind, name, *where, "-o", "json", "--ignore-not-found", check=True
    )
    return json.loads(result.stdout) if result.stdout.strip() else None


def items(cluster: Cluster, kind: str, namespace: str, *selectors: str) -> list[dict[str, Any]]:
    result = cluster.kubectl("get", kind, "-n", namespace, *selectors, "-o", "json")
    found: list[dict[str, Any]] = json.loads(result.stdout)["items"]
    return found


def status_of(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    found = get(cluster, "falcoalert", name, namespace)
    return dict((found or {}).get("status") or {})


def wait_for_phase(
    cluster: Cluster,
    namespace: str,
    name: str,
    phases: str | Iterable[str],
    *,
    timeout: float = RESPONSE_TIMEOUT,
) -> dict[str, Any]:
    """The alert's status once its phase is one of ``phases``."""
    wanted = {phases} if isinstance(phases, str) else set(phases)

    def reached() -> dict[str, Any] | None:
        status = status_of(cluster, namespace, name)
        return status if status.get("phase") in wanted else None

    return wait_for(
        reached,
        timeout=timeout,
        what=f"FalcoAlert {namespace}/{name} to reach phase {' or '.join(sorted(wanted))}",
        interval=0.2,
    )


def records(status: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """status.remediation.actions by action name."""
    return {r["name"]: r for r in (status.get("remediation") or {}).get("actions") or []}


def events_for(
    cluster: Cluster, namespace: str, name: str, reason: str | None = None
) -> list[dict[str, Any]]:
    """Events about the FalcoAlert ``name`` (optionally one reason)."""
    selector = f"involvedObject.name={name},involvedObject.kind=FalcoAlert"
    if reason:
        selector += f",reason={reason}"
    return items(cluster, "events", namespace, "--field-selector", selector)


def network_policies(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    return items(
        cluster, "networkpolicies", namespace, "-l", "app.kubernetes.io/managed-by=falco-triage"
    )


def pod_labels(cluster: Cluster, namespace: str, name: str) -> dict[str, str]:
    found = get(cluster, "pod", name, namespace)
    return dict(((found or {}).get("metadata") or {}).get("labels") or {})


def replicas(cluster: Cluster, namespace: str, name: str) -> int:
    found = get(cluster, "deployment", name, namespace)
    return int(found["spec"]["replicas"])


def policy_status(cluster: Cluster, name: str, namespace: str | None = None) -> dict[str, Any]:
    kind = "responsepolicy" if namespace else "clusterresponsepolicy"
    found = get(cluster, kind, name, namespace)
    return dict((found or {}).get("status") or {})


def valid_condition(status: Mapping[str, Any]) -> dict[str, Any] | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Valid":
            return dict(condition)
    return None


# -- the operator --------------------------------------------------------------------------------


def new_namespace(cluster: Cluster, prefix: str, labels: Mapping[str, str] | None = None) -> str:
    """A fresh namespace (delete it with :func:`delete`, kind ``namespace``)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    if labels:
        cluster.kubectl(
            "label", "namespace", name, *(f"{key}={value}" for key, value in labels.items())
        )
    return name


@contextmanager
def response_operator(
    cluster: Cluster,
    operator_namespace: str,
    *,
    env: Mapping[str, str] | None = None,
    kubeconfig: Path | None = None,
    name: str = "operator",
) -> Iterator[Service]:
    """``falco-triage run`` whose own (protected) namespace is ``operator_namespace``."""
    settings = {"FALCO_TRIAGE_NAMESPACE": operator_namespace, **(env or {})}
    with operator_service(kubeconfig or cluster.kubeconfig, env=settings, name=name) as service:
        yield service


def create_policy(cluster: Cluster, body: Mapping[str, Any], *, valid: bool = True) -> None:
    """Create a policy and wait until the operator has validated it (and so indexed it).

    NB: kopf updates its indexes before it calls any handler for the same event, so once the
    Valid condition is written, decisions see the policy.
    """
    create(cluster, body)
    kind = "responsepolicy" if body["kind"] == "ResponsePolicy" else "clusterresponsepolicy"
    namespace = body["metadata"].get("namespace")
    name = body["metadata"]["name"]
    condition = wait_for(
        lambda: valid_condition(policy_status(cluster, name, namespace)),
        timeout=RESPONSE_TIMEOUT,
        what=f"the operator to validate {kind} {name}",
        interval=0.2,
    )
    assert (condition["status"] == "True") is valid, condition


def wait_for_events(
    cluster: Cluster, namespace: str, name: str, reason: str, *, count: int = 1
) -> list[dict[str, Any]]:
    """Exactly ``count`` Events of ``reason`` about the alert (kopf posts them asynchronously)."""

    def found() -> list[dict[str, Any]] | None:
        events = events_for(cluster, namespace, name, reason)
        return events if len(events) == count else None

    return wait_for(
        found,
        timeout=RESPONSE_TIMEOUT,
        what=f"{count} {reason} Event(s) on FalcoAlert {namespace}/{name}",
        interval=0.2,
    )

"""What an event concerns, and so which namespace its FalcoAlert lives in.

- A syscall event from a Kubernetes pod (``k8s.ns.name`` set) concerns that pod: the alert
  goes to the pod's namespace, where the people who own the workload can see it.
- A ``k8s_audit`` event concerns the API object it names (``ka.target.*``); it goes to that
  object's namespace when it has one.
- Everything else (a process on the node, a container outside Kubernetes, a cluster-scoped
  audit event) concerns the host or the cluster: it keeps the hostname as its target and goes
  to the operator's own namespace.

Namespace names are checked (DNS-1123 label), so a malformed field can never direct a write
elsewhere than a real-looking namespace; anything else falls back to the operator's namespace.
"""

from __future__ import annotations

import re

from falco_triage.events.controls import single_line
from falco_triage.models.alert import Target, TargetKind
from falco_triage.models.event import FalcoEvent

K8S_AUDIT = "k8s_audit"
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_HOST_CONTAINER = "host"  # Falco's container.id / container.name for processes on the node


def valid_namespace(name: str | None) -> bool:
    return name is not None and _NAMESPACE.match(name) is not None


def resolve_target(event: FalcoEvent, default_namespace: str) -> Target:
    """The :class:`Target` of ``event``.

    ``default_namespace`` is not stored in the target (``namespace`` stays empty for host and
    cluster events); :func:`alert_namespace` applies it when the alert is written.
    """
    if event.source == K8S_AUDIT:
        return _audit_target(event)
    field = event.field
    namespace = field("k8s.ns.name")
    container_id = field("container.id")
    container_name = field("container.name")
    if container_id == _HOST_CONTAINER:
        container_id = container_name = None
    if valid_namespace(namespace):
        pod = _bounded(field("k8s.pod.name"), 253)
        return Target(
            kind=TargetKind.POD,
            display=_display(f"{namespace}/{pod or container_name or '?'}"),
            namespace=namespace,
            pod=pod,
            container_id=_bounded(container_id, 128),
            container_name=_bounded(container_name, 253),
            image=_image(event),
            node=_bounded(event.hostname, 253),
        )
    host = _bounded(event.hostname, 253) or "unknown-host"
    display = f"{host}/{container_name}" if container_name else host
    return Target(
        kind=TargetKind.HOST,
        display=_display(display),
        container_id=_bounded(container_id, 128),
        container_name=_bounded(container_name, 253),
        image=_image(event) if container_id else None,
        node=host,
    )


def alert_namespace(target: Target, default_namespace: str) -> str:
    """Where the FalcoAlert for ``target`` is stored."""
    return target.namespace or default_namespace


def _audit_target(event: FalcoEvent) -> Target:
    field = event.field
    namespace = field("ka.target.namespace")
    resource = _bounded(field("ka.target.resource"), 253)
    name = _bounded(field("ka.target.name") or field("ka.resp.name"), 253)
    subresource = field("ka.target.subresource")
    if not valid_namespace(namespace):
        namespace = None
    kind_text = f"{resource}/{subresource}" if resource and subresource else resource
    parts = [p for p in (namespace, kind_text, name) if p]
    return Target(
        kind=TargetKind.KUBERNETES_OBJECT,
        display=_display("/".join(parts) or "cluster"),
        namespace=namespace,
        pod=name if resource == "pods" else None,
        resource=resource,
        resource_name=name,
        node=_bounded(event.hostname, 253),
    )


def _image(event: FalcoEvent) -> str | None:
    repository = event.field("container.image.repository")
    tag = event.field("container.image.tag")
    if repository:
        return _bounded(f"{repository}:{tag}" if tag else repository, 1024)
    return _bounded(event.field("container.image"), 1024)


def _display(text: str) -> str:
    """The one-line text ``kubectl get falcoalerts`` prints in its Target column.

    NB: field values keep their tabs and newlines (command lines hold them), so a pod or
    container name could carry one into the column; the display gets them replaced.
    """
    return single_line(text)[:512]


def _bounded(value: str | None, limit: int) -> str | None:
    return value[:limit] if value is not None else None

"""Reading Falco output fields: human labels, and the what/where of an event."""

from __future__ import annotations

from falco_triage.models.alert import MAX_FIELD_VALUE
from falco_triage.models.analysis import Fact, WhatHappened, Where
from falco_triage.models.event import FalcoEvent
from falco_triage.models.text import clip

LABELS = {
    "proc.name": "Process",
    "proc.exepath": "Executable path",
    "proc.exe": "Executable",
    "proc.cmdline": "Command line",
    "proc.pname": "Parent process",
    "proc.pcmdline": "Parent command line",
    "proc.pid": "PID",
    "proc.ppid": "Parent PID",
    "proc.tty": "Terminal",
    "proc.cwd": "Working directory",
    "proc.sname": "Session leader",
    "user.name": "User",
    "user.uid": "UID",
    "user.loginuid": "Login UID",
    "user.loginname": "Login name",
    "group.name": "Group",
    "group.gid": "GID",
    "evt.type": "Event type",
    "evt.res": "Event result",
    "evt.arg.flags": "Flags",
    "fd.name": "File or connection",
    "fd.nameraw": "File (raw)",
    "fd.type": "Descriptor type",
    "fd.l4proto": "Protocol",
    "fd.sip": "Server IP",
    "fd.sport": "Server port",
    "fd.rip": "Remote IP",
    "fd.rport": "Remote port",
    "fd.lport": "Local port",
    "container.id": "Container ID",
    "container.name": "Container",
    "container.image.repository": "Image",
    "container.image.tag": "Image tag",
    "container.privileged": "Privileged",
    "k8s.ns.name": "Namespace",
    "k8s.pod.name": "Pod",
    "ka.user.name": "API user",
    "ka.verb": "Verb",
    "ka.uri": "Request URI",
    "ka.target.resource": "Resource",
    "ka.target.name": "Object name",
    "ka.target.namespace": "Object namespace",
    "ka.target.subresource": "Subresource",
    "ka.response.code": "Response code",
    "ka.auth.decision": "Authorization decision",
    "ka.auth.reason": "Authorization reason",
    "ka.resp.name": "Created object",
    "ka.req.pod.containers.image": "Container images",
    "ka.req.pod.initContainers.image": "Init container images",
    "ka.req.pod.ephemeralContainers.image": "Ephemeral container images",
    "ka.req.role.rules": "Role rules",
    "ka.req.binding.subjects": "Binding subjects",
    "ka.req.binding.role": "Bound role",
    "ka.req.service.ports": "Service ports",
    "proc.pexepath": "Parent executable path",
    "proc.pexe": "Parent executable",
    "proc.args": "Arguments",
    "proc.env": "Environment",
    "proc.exe_ino.ctime": "Executable inode change time",
    "proc.exe_ino.mtime": "Executable modification time",
    "proc.exe_ino.ctime_duration_proc_start": "Executable changed before start (ns)",
    "container.start_ts": "Container start time",
    "container.mounts": "Container mounts",
    "evt.args": "Event arguments",
    "evt.arg.name": "Name argument",
    "evt.arg.path": "Path argument",
    "evt.arg.pathname": "Path argument",
    "evt.arg.filename": "File name argument",
    "evt.arg.newpath": "New path",
    "evt.arg.oldpath": "Old path",
    "evt.arg.target": "Link target",
    "evt.arg.linkpath": "Link path",
    "evt.arg.mode": "Mode",
    "evt.arg.uid": "UID argument",
    "evt.arg.cmd": "Command argument",
    "evt.arg.fd": "File descriptor",
    "fd.sip.name": "Server host name",
    "fd.rip.name": "Remote host name",
    "fd.lip.name": "Local host name",
    "fd.cip.name": "Client host name",
    "thread.cap_effective": "Effective capabilities",
    "thread.cap_permitted": "Permitted capabilities",
}
_ANCESTORS = [f"proc.aname[{i}]" for i in range(2, 8)]
# When the knowledge base names no object, the first of these the event carries is the object.
_OBJECT_FALLBACK = [
    "fd.name",
    "evt.arg.pathname",
    "evt.arg.path",
    "evt.arg.filename",
    "evt.arg.name",
    "ka.target.name",
    "ka.resp.name",
]


def label(field: str) -> str:
    if field in LABELS:
        return LABELS[field]
    if field.startswith("proc.aname["):
        return "Ancestor " + field.removeprefix("proc.aname[").rstrip("]")
    return field


def get(event: FalcoEvent, field: str) -> str | None:
    """A field's text, bounded: analysis never trusts that the event was normalized first."""
    if field == "hostname":
        return event.hostname and clip(event.hostname, MAX_FIELD_VALUE)
    value = event.field(field)
    return None if value is None else clip(value, MAX_FIELD_VALUE)


def fact(event: FalcoEvent, field: str) -> Fact:
    return Fact(label=label(field), field=field, value=get(event, field))


def what_happened(event: FalcoEvent, object_field: str | None) -> WhatHappened:
    # The knowledge base names the rule's object field; when this event lacks it (older Falco,
    # a trimmed output), the first object-like field the event does carry is used instead.
    candidates = [object_field] if object_field else []
    obj_field = next((f for f in [*candidates, *_OBJECT_FALLBACK] if get(event, f)), None)
    audit = event.source == "k8s_audit"
    return WhatHappened(
        process=None if audit else get(event, "proc.exepath") or get(event, "proc.name"),
        parent=get(event, "proc.pname"),
        ancestors=[v for f in _ANCESTORS if (v := get(event, f)) is not None],
        user=get(event, "ka.user.name") if audit else get(event, "user.name"),
        uid=get(event, "user.uid"),
        loginuid=get(event, "user.loginuid"),
        command_line=get(event, "proc.cmdline"),
        object=fact(event, obj_field) if obj_field else None,
        event_type=get(event, "ka.verb") if audit else get(event, "evt.type"),
        time=event.time.isoformat().replace("+00:00", "Z"),
    )


def where(event: FalcoEvent) -> Where:
    audit = event.source == "k8s_audit"
    container_id = get(event, "container.id")
    in_container = container_id not in (None, "host")
    repo, tag = get(event, "container.image.repository"), get(event, "container.image.tag")
    image = f"{repo}:{tag}" if repo and tag else repo
    privileged = get(event, "container.privileged")
    if audit:
        kind = "KubernetesObject"
    elif in_container or get(event, "k8s.pod.name"):
        kind = "Pod"
    else:
        kind = "Host"
    return Where(
        node=get(event, "hostname"),
        namespace=get(event, "ka.target.namespace") if audit else get(event, "k8s.ns.name"),
        pod=get(event, "k8s.pod.name"),
        container_name=get(event, "container.name"),
        container_id=container_id,
        image=image,
        privileged=None if privileged is None else privileged == "true",
        kind=kind,
    )

"""The fingerprint that says "this is the same alert again", and the FalcoAlert name built on it.

A fingerprint is the sha256 of: the rule, the source, the target's identity, and the rule's
*key fields*. What is deliberately **not** in it: the timestamp, the full ``output`` text (it
starts with a timestamp and repeats every field), and anything that changes on each repetition
of the same behaviour.

Target identity:

- Pod: namespace, pod name and container *name*. Not the container id: it changes on every
  container restart, and a crash-looping container repeating the same behaviour is one alert.
- Host: the hostname (and the container name, for containers outside Kubernetes).
- Kubernetes object (``k8s_audit``): namespace, resource and object name.

Key fields, per source:

- ``syscall``: ``proc.name``, ``proc.exepath``, ``proc.pname``, ``user.name`` (who did what
  from where), ``fd.name``, ``fd.sip``, ``fd.rip`` (what it touched). Not ``proc.pid``/ppid,
  ``proc.cmdline`` (arguments carry temp names, counters and times), ``evt.type`` (one
  behaviour fires on open/openat/openat2 alike) nor ports: ``fd.name`` connection tuples
  (``10.0.0.5:43312->1.2.3.4:443``) keep the addresses and drop the ports, because the
  client side is ephemeral; ``/proc/1234/environ`` becomes ``/proc/<pid>/environ``.
- ``k8s_audit``: ``ka.user.name``, ``ka.verb``, ``ka.target.resource``,
  ``ka.target.subresource``, ``ka.target.namespace``, ``ka.target.name``, ``ka.resp.name`` —
  who did what to which object. Not request ids, URIs with query strings or response codes.
- Any other plugin source: every output field except those whose names mark them as volatile
  (times, ids, uuids, ports, pids, sequence numbers, durations).

The FalcoAlert name is ``<rule slug>-<16 hex>``, the hex taken from the fingerprint *and* the
aggregation window the event's time falls in (windows are aligned to the Unix epoch), so all
repeats in one window, from any receiver replica, converge on one object, and a repeat after
the window opens a fresh alert that is analyzed and decided again.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime

from falco_triage.events.target import K8S_AUDIT, resolve_target
from falco_triage.models.alert import FalcoAlertSpec, Target, TargetKind
from falco_triage.models.event import FalcoEvent, OutputValue

FINGERPRINT_VERSION = 1
DEFAULT_WINDOW_SECONDS = 86_400

SYSCALL_KEY_FIELDS = (
    "proc.name",
    "proc.exepath",
    "proc.pname",
    "user.name",
    "fd.name",
    "fd.sip",
    "fd.rip",
)
K8S_AUDIT_KEY_FIELDS = (
    "ka.user.name",
    "ka.verb",
    "ka.target.resource",
    "ka.target.subresource",
    "ka.target.namespace",
    "ka.target.name",
    "ka.resp.name",
)
# The last component of a field name (``ct.id``, ``okta.request.time``, ``fd.lport``).
_VOLATILE_FIELD = re.compile(
    r"(?:^|[._\[])(?:ts|date|uuid|id|eventid|requestid|port|[lrcs]port|pid|ppid|num|seq"
    r"|latency|duration)\]?$|time",
    re.IGNORECASE,
)
_PROC_PID = re.compile(r"^/proc/\d+(?=/|$)")
# ``client_ip:port->server_ip:port``; bounded so a crafted fd.name cannot make it backtrack.
_CONNECTION = re.compile(r"^(?P<client>[^\s>]{1,64}):\d{1,5}->(?P<server>[^\s>]{1,64}):\d{1,5}$")
_SLUG_DROP = re.compile(r"[^a-z0-9]+")
_SLUG_MAX = 40
_NAME_HEX = 16  # 64 bits: collisions stay negligible even for millions of alerts per rule


def key_fields(event: FalcoEvent) -> dict[str, str]:
    """The output fields (normalized) that distinguish one alert of a rule from another."""
    if event.source == "syscall":
        names: tuple[str, ...] | list[str] = SYSCALL_KEY_FIELDS
    elif event.source == K8S_AUDIT:
        names = K8S_AUDIT_KEY_FIELDS
    else:
        names = sorted(k for k in event.output_fields if not _VOLATILE_FIELD.search(k))
    keys: dict[str, str] = {}
    for name in names:
        value = event.field(name)
        if value is not None:
            keys[name] = _normalize(name, value)
    return keys


def fingerprint(event: FalcoEvent, target: Target) -> str:
    """sha256 hex of rule, source, target identity and key fields (see the module doc)."""
    identity: list[str | None]
    if target.kind == TargetKind.POD:
        identity = [target.namespace, target.pod, target.container_name]
    elif target.kind == TargetKind.HOST:
        identity = [target.node, target.container_name]
    else:
        identity = [target.namespace, target.resource, target.resource_name]
    material = [
        FINGERPRINT_VERSION,
        event.rule,
        event.source,
        target.kind.value,
        identity,
        sorted(key_fields(event).items()),
    ]
    canonical = json.dumps(material, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def build_spec(event: FalcoEvent, target: Target, fp: str) -> FalcoAlertSpec:
    """The FalcoAlert spec for ``event`` when its target and fingerprint are already known."""
    return FalcoAlertSpec(
        rule=event.rule,
        priority=event.priority,
        source=event.source,
        time=event.time,
        hostname=event.hostname,
        output=event.output,
        output_fields={k: _text(v) for k, v in event.output_fields.items()},
        tags=list(event.tags),
        uuid=event.uuid,
        fingerprint=fp,
        target=target,
    )


def alert_spec(event: FalcoEvent, default_namespace: str) -> FalcoAlertSpec:
    """The FalcoAlert spec for a (normalized) event: target resolved, fingerprint computed."""
    target = resolve_target(event, default_namespace)
    return build_spec(event, target, fingerprint(event, target))


def alert_name(spec: FalcoAlertSpec, window_seconds: int = DEFAULT_WINDOW_SECONDS) -> str:
    """A valid DNS-1123 name: the rule's slug and a hash of fingerprint and time window."""
    return name_for(spec.rule, spec.fingerprint, spec.time, window_seconds)


def name_for(rule: str, fp: str, time: datetime, window_seconds: int) -> str:
    """:func:`alert_name` from its parts, for callers that have not built a spec."""
    window = int(time.timestamp()) // window_seconds
    digest = hashlib.sha256(f"{fp}/{window_seconds}/{window}".encode()).hexdigest()
    return f"{slug(rule)}-{digest[:_NAME_HEX]}"


def slug(rule: str) -> str:
    """``Terminal shell in container`` → ``terminal-shell-in-container`` (at most 40 chars)."""
    text = _SLUG_DROP.sub("-", rule.lower()).strip("-")[:_SLUG_MAX].strip("-")
    return text or "alert"


def _normalize(name: str, value: str) -> str:
    if name == "fd.name":
        value = _PROC_PID.sub("/proc/<pid>", value)
        match = _CONNECTION.match(value)
        if match:
            return f"{match.group('client')}->{match.group('server')}"
    return value


def _text(value: OutputValue) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)

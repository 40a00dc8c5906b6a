"""Factories for Falco events, as Falco's http_output and Falcosidekick's webhook send them.

Rule name, priority, source, tags and output format come from ``tests/data/falco_rules_facts.json``
(the public rules), so ``make_raw_event("Read sensitive file untrusted")`` looks like what
Falco would really send for that rule. Override anything::

    make_raw_event("Terminal shell in container", namespace="shop", pod="web-1",
                   **{"proc.name": "sh", "user.name": "www-data"})
    make_event("Attach/Exec Pod", **{"ka.target.namespace": "payments"})   # -> FalcoEvent
    make_raw_event(host=True)              # a process on the node, no container
    make_raw_event(sidekick=True)          # with Falcosidekick's uuid

Keyword arguments that are Falco event keys (``time``, ``priority``, ``source``, ``hostname``,
``output``, ``tags``, ``uuid``) replace those; any other keyword is an output field (use
``**{"proc.name": …}`` for dotted names). A value of ``None`` sends JSON null.
"""

from __future__ import annotations

import json
import re
import uuid as uuidlib
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from falco_triage.events.normalize import normalize_event
from falco_triage.events.parse import Limits
from falco_triage.models.event import FalcoEvent

DATA = Path(__file__).resolve().parents[1] / "data"
FACTS = DATA / "falco_rules_facts.json"
EVENTS = DATA / "events"

DEFAULT_RULE = "Terminal shell in container"
DEFAULT_TIME = datetime(2024, 5, 14, 9, 21, 7, 512345, tzinfo=UTC)
_EVENT_KEYS = {"time", "priority", "source", "hostname", "output", "tags", "uuid", "rule"}
_FIELD = re.compile(r"%([a-zA-Z0-9_.]+(?:\[[^\]]*\])?)")

# Plausible values for the fields the public rules print; anything else gets "<field>-value".
_VALUES: dict[str, Any] = {
    "evt.type": "execve",
    "evt.arg.flags": "EXE_WRITABLE|EXE_LOWER_LAYER",
    "evt.res": "SUCCESS",
    "user.name": "root",
    "user.uid": 0,
    "user.loginuid": -1,
    "user.loginname": "<NA>",
    "group.gid": 0,
    "group.name": "root",
    "proc.name": "bash",
    "proc.exepath": "/usr/bin/bash",
    "proc.pname": "runc",
    "proc.cmdline": "bash",
    "proc.pcmdline": "runc init",
    "proc.tty": 34816,
    "proc.pid": 48211,
    "proc.ppid": 48190,
    "proc.cwd": "/",
    "proc.aname[2]": "containerd-shim",
    "proc.aname[3]": "systemd",
    "proc.aname[4]": None,
    "proc.sid": 1,
    "proc.vpgid": 1,
    "proc.is_vpgid_leader": False,
    "fd.name": "/etc/shadow",
    "fd.nameraw": "/etc/shadow",
    "fd.directory": "/etc",
    "fd.filename": "shadow",
    "fd.type": "ipv4",
    "fd.l4proto": "tcp",
    "fd.sip": "10.96.0.1",
    "fd.rip": "10.96.0.1",
    "fd.lport": 43312,
    "fd.rport": 443,
    "fd.sport": 443,
    "fd.cip": "10.244.1.17",
    "fd.sip.name": None,
    "container.id": "3f1c9a2b7d4e",
    "container.name": "nginx",
    "container.image.repository": "docker.io/library/nginx",
    "container.image.tag": "1.25.3",
    "container.privileged": False,
    "k8s.ns.name": "shop",
    "k8s.pod.name": "web-7d9f8c6b5-x2kqp",
    "ka.user.name": "system:serviceaccount:ci:deployer",
    "ka.target.resource": "pods",
    "ka.target.namespace": "shop",
    "ka.target.name": "web-7d9f8c6b5-x2kqp",
    "ka.target.subresource": "exec",
    "ka.resp.name": "web-7d9f8c6b5-x2kqp",
    "ka.verb": "create",
    "ka.uri.param[command]": "sh",
    "ka.response.code": 200,
    "ka.auth.decision": "allow",
    "ka.auth.reason": 'RBAC: allowed by ClusterRoleBinding "deployer"',
}
# Fields Falco appends to syscall rules (append_output in falco.yaml), as most installs do.
CONTAINER_FIELDS = (
    ("container_id", "container.id"),
    ("container_name", "container.name"),
    ("container_image_repository", "container.image.repository"),
    ("container_image_tag", "container.image.tag"),
    ("k8s_pod_name", "k8s.pod.name"),
    ("k8s_ns_name", "k8s.ns.name"),
)


@cache
def rule_facts() -> dict[str, dict[str, Any]]:
    """The public rules by name."""
    entries = json.loads(FACTS.read_text(encoding="utf-8"))
    return {entry["rule"]: entry for entry in entries}


def make_raw_event(
    rule: str = DEFAULT_RULE,
    *,
    namespace: str | None = "shop",
    pod: str | None = "web-7d9f8c6b5-x2kqp",
    host: bool = False,
    sidekick: bool = False,
    at: datetime = DEFAULT_TIME,
    **overrides: Any,
) -> dict[str, Any]:
    """A JSON-ready Falco event for ``rule`` (see the module doc for the arguments)."""
    facts = rule_facts().get(rule)
    source = overrides.get("source") or (facts["source"] if facts else "syscall")
    names = list(facts["output_field_names"]) if facts else ["proc.name", "proc.cmdline"]
    fields: dict[str, Any] = {name: _VALUES.get(name, f"{name}-value") for name in names}
    if source == "syscall":
        for _, name in CONTAINER_FIELDS:
            fields[name] = _VALUES[name]
        fields["k8s.ns.name"], fields["k8s.pod.name"] = namespace, pod
        if host:
            fields.update(
                {
                    "container.id": "host",
                    "container.name": "host",
                    "container.image.repository": None,
                    "container.image.tag": None,
                    "k8s.ns.name": None,
                    "k8s.pod.name": None,
                }
            )
    elif source == "k8s_audit" and namespace is not None and "ka.target.namespace" in fields:
        fields["ka.target.namespace"] = namespace
    fields.update({k: v for k, v in overrides.items() if k not in _EVENT_KEYS})
    priority = overrides.get("priority") or (facts["json_priority"] if facts else "Warning")
    raw: dict[str, Any] = {
        "hostname": overrides.get("hostname", "worker-1"),
        "output": overrides.get("output")
        or render_output(facts, fields, priority, at, container=source == "syscall"),
        "output_fields": dict(sorted(fields.items())),
        "priority": priority,
        "rule": rule,
        "source": source,
        "tags": overrides.get("tags", sorted(facts["tags"]) if facts else ["container"]),
        "time": overrides.get("time", falco_time(at)),
    }
    if sidekick or "uuid" in overrides:
        raw["uuid"] = overrides.get("uuid", str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, repr(raw))))
    return raw


def make_event(rule: str = DEFAULT_RULE, **kwargs: Any) -> FalcoEvent:
    """:func:`make_raw_event`, normalized as the receiver would (bounded, redacted, typed)."""
    return normalize_event(make_raw_event(rule, **kwargs), Limits())


def falco_time(at: datetime) -> str:
    """RFC 3339 with nanoseconds, as Falco writes ``time``."""
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond:06d}123Z"


def render_output(
    facts: dict[str, Any] | None,
    fields: dict[str, Any],
    priority: str,
    at: datetime,
    *,
    container: bool,
) -> str:
    """Falco's output line: time, priority, the rule's format filled in, appended fields."""
    template = facts["output_format"] if facts else "Event | process=%proc.name"
    text = _FIELD.sub(lambda m: _text(fields.get(m.group(1))), template)
    if container:
        text += " " + " ".join(
            f"{label}={_text(fields.get(name))}" for label, name in CONTAINER_FIELDS
        )
    stamp = at.strftime("%H:%M:%S.") + f"{at.microsecond:06d}123"
    return f"{stamp}: {priority} {text}"


def _text(value: Any) -> str:
    if value is None:
        return "<NA>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def sample_files() -> list[Path]:
    """The real-looking payloads in tests/data/events, Falco's and Falcosidekick's."""
    return sorted(EVENTS.glob("**/*.json"))


# --------------------------------------------------------------------------------------------
# A stand-in for the Kubernetes API, for receiver tests that need no cluster
# --------------------------------------------------------------------------------------------


class FakeAlertStore:
    """Records what :class:`~falco_triage.k8s.alerts.AlertStore` would write, in memory.

    ``fail_next`` holds exceptions to raise on the next calls (one per call), ``delay`` makes
    every write slow; thread-safe, as the writer calls it from worker threads.
    """

    def __init__(self, throttle: Any = None, observe: Any = None, delay: float = 0.0) -> None:
        import threading

        self.alerts: dict[tuple[str, str], dict[str, Any]] = {}
        self.fail_next: list[BaseException] = []
        self.calls = 0
        self.delay = delay
        self._throttle = throttle or (lambda: None)
        self._observe = observe or (lambda _op, _err: None)
        self._lock = threading.Lock()

    def record(
        self,
        namespace: str,
        name: str,
        spec: Any,
        delta: Any,
        *,
        known: Any = None,
        doubt: Any = None,
    ) -> Any:
        import time as _time

        from falco_triage.k8s.alerts import Recorded, Stored
        from falco_triage.models.alert import Occurrences

        self._throttle()
        if self.delay:
            _time.sleep(self.delay)
        with self._lock:
            self.calls += 1
            if self.fail_next:
                error = self.fail_next.pop(0)
                self._observe("patch_status", type(error).__name__)
                raise error
            key = (namespace, name)
            created = key not in self.alerts
            if created:
                self.alerts[key] = {"spec": spec(), "count": 0, "first": None, "last": None}
            alert = self.alerts[key]
            counted = 0
            if doubt is not None and doubt.count_after <= alert["count"]:
                counted = doubt.count  # the unanswered write did land
            alert["count"] += delta.count - counted
            alert["first"] = min(filter(None, [alert["first"], delta.first_seen]))
            alert["last"] = max(filter(None, [alert["last"], delta.last_seen]))
            self._observe("create" if created else "patch_status", None)
            occurrences = Occurrences(
                count=alert["count"], first_seen=alert["first"], last_seen=alert["last"]
            )
            return Recorded(created, Stored(str(self.calls), occurrences), counted)

    def count(self, namespace: str, name: str) -> int:
        with self._lock:
            return int(self.alerts.get((namespace, name), {}).get("count", 0))

    def total(self) -> int:
        with self._lock:
            return sum(int(a["count"]) for a in self.alerts.values())


# --------------------------------------------------------------------------------------------
# A receiver for tests: the real server in the test's event loop, writing to a real cluster
# --------------------------------------------------------------------------------------------

TEST_TOKEN = "falco-triage-test-token-0123456789"


class TestReceiver:
    """A started receiver (``falco_triage.ingest.server.start_ingest``) and an HTTP client."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self, runner: Any, session: Any) -> None:
        self.runner = runner
        self.session = session
        self.url = f"{runner.url}/v1/events"

    async def post(self, body: Any, token: str = TEST_TOKEN) -> tuple[int, dict[str, Any]]:
        data = body if isinstance(body, bytes | str) else json.dumps(body)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        async with self.session.post(self.url, data=data, headers=headers) as response:
            return response.status, await response.json(content_type=None)

    def metric(self, name: str, *labels: str) -> float:
        metric = getattr(self.runner.metrics, name)
        return float((metric.labels(*labels) if labels else metric)._value.get())


def receiver_settings(namespace: str, **ingest: Any) -> Any:
    from pydantic import SecretStr

    from falco_triage.settings import IngestSettings, Settings

    options: dict[str, Any] = {"host": "127.0.0.1", "token": SecretStr(TEST_TOKEN)}
    options.update(ingest)
    return Settings(namespace=namespace, ingest=IngestSettings(**options))


def start_test_receiver(settings: Any, kubeconfig: Path) -> Any:
    """An async context manager yielding a :class:`TestReceiver` writing through ``kubeconfig``."""
    from contextlib import asynccontextmanager

    import aiohttp

    from falco_triage.ingest.server import start_ingest
    from falco_triage.k8s.client import new_api_client

    @asynccontextmanager
    async def started() -> Any:
        api = new_api_client(kubeconfig, pool_size=settings.ingest.write_workers)
        runner = await start_ingest(settings, api=api, port=0)
        try:
            async with aiohttp.ClientSession() as session:
                yield TestReceiver(runner, session)
        finally:
            await runner.stop()
            api.close()

    return started()

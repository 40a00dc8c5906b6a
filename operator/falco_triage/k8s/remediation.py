"""The remediation adapter: sends planned operations to the API server, and reads what plans need.

The pure planner (:mod:`falco_triage.remediation`) builds every object and patch; this module
only sends them, one :class:`~falco_triage.remediation.Operation` at a time, so that running
a step twice (after a crash, on another replica) changes nothing the second time:

- ``create``: 409 AlreadyExists → read the object; ours (``is_ours``) → done, else Conflict
  (retried later: it is usually an earlier alert's object still being garbage-collected).
- ``patch``: a JSON merge patch. Pod patches carry the uid the plan read; the API server
  rejects a different one (422 on ``metadata.uid``): the pod was replaced → Skipped.
- ``delete``: 404 → done; a failed uid precondition (409) → the pod was replaced → Skipped.
- ``event``: a core/v1 Event on the FalcoAlert, under a name derived from the alert's uid and
  the action, so a re-run finds it (409) instead of posting it twice.
- ``webhook``: POST the body to the URL held in a Secret key in the operator's namespace, with
  a bounded timeout. The URL is never logged or recorded (it is a credential).

Failures are translated once, here, into a :class:`StepOutcome`: Forbidden names the
permission that is missing and the chart value that grants it; Transient errors and
conflicts are marked retryable; anything else is Failed with the API server's message.
Blocking: call from a worker thread.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from kubernetes import client

from falco_triage.k8s.errors import (
    ApiError,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Transient,
)
from falco_triage.k8s.rest import Resource, RestClient, resource_for
from falco_triage.k8s.status import FIELD_MANAGER
from falco_triage.models.alert import ActionResult, ObjectRef
from falco_triage.models.common import API_VERSION
from falco_triage.remediation import PlannedStep, WorkloadState, is_ours, workload_of
from falco_triage.remediation.pod import controller_of
from falco_triage.remediation.steps import Operation, Verb

log = logging.getLogger(__name__)

# A webhook gets this long: connecting 5 s, the whole request 10 s. A chat service that takes
# longer is down, and the alert's other actions must not wait on it.
WEBHOOK_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
EVENT_SOURCE = "falco-triage"
_EVENT_NAME_MAX = 253
_HASH_CHARS = 16
_CONFLICT_ROUNDS = 8  # read-modify-write rounds on one object before giving up for now

_RBAC_VERBS = {
    Verb.CREATE: "create",
    Verb.PATCH: "patch",
    Verb.DELETE: "delete",
    Verb.EVENT: "create",
    Verb.WEBHOOK: "get",
}


@dataclass(frozen=True)
class AlertIdentity:
    """The FalcoAlert a step acts for: objects are owned by it, Events are about it."""

    namespace: str
    name: str
    uid: str

    @classmethod
    def of(cls, metadata: Mapping[str, Any]) -> AlertIdentity:
        return cls(
            namespace=str(metadata.get("namespace") or ""),
            name=str(metadata.get("name") or ""),
            uid=str(metadata.get("uid") or ""),
        )


@dataclass(frozen=True)
class StepOutcome:
    """How a step (or a rollback step) ended. ``retryable``: worth trying again later."""

    result: ActionResult
    message: str
    retryable: bool = False


class WebhookError(Exception):
    """The webhook could not be called, or did not accept the message."""


class _Skipped(Exception):
    """The target is no longer the one the plan was made for."""


def permission_text(verb: str, resource: Resource, subresource: str | None = None) -> str:
    """``patch pods``, ``patch apps/deployments/scale``: a permission as RBAC spells it."""
    sub = f"/{subresource}" if subresource else ""
    return f"{verb} {resource.display}{sub}"


def forbidden_message(
    permission: str, namespace: str | None, grant: str, exc: ApiError | None = None
) -> str:
    """What a person reads when RBAC said no: which permission, where, and how to grant it."""
    where = f" in namespace {namespace!r}" if namespace else ""
    server = f" API server: {exc.message}" if exc is not None else ""
    return f"Forbidden: the operator may not {permission}{where}; grant it with {grant}.{server}"


def chart_grant(action_type: str) -> str:
    """The Helm value that grants an action's permissions."""
    if action_type == "notify":
        return "actions.notify.secretNames (the webhook Secret's name) in the Helm chart"
    return f"actions.{action_type}.enabled=true in the Helm chart"


class Remediator:
    """Reads and writes for remediation, against one API server."""

    def __init__(
        self,
        api: client.ApiClient | RestClient,
        *,
        webhook_timeout: httpx.Timeout = WEBHOOK_TIMEOUT,
        webhook_transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.rest = api if isinstance(api, RestClient) else RestClient(api)
        self._webhook_timeout = webhook_timeout
        self._webhook_transport = webhook_transport

    # -- reads ---------------------------------------------------------------------------------

    def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The pod as the API server has it, or None when it does not exist."""
        return self._get(resource_for("v1", "Pod").path(namespace, name))

    def read_workload(self, pod: Mapping[str, Any]) -> WorkloadState | None:
        """The Deployment (pod → ReplicaSet → Deployment) or StatefulSet behind a pod.

        Replicas are read through the ``scale`` subresource, the only part of a workload the
        operator may touch. None for bare pods, DaemonSets, Jobs and vanished owners.
        """
        namespace = str((pod.get("metadata") or {}).get("namespace") or "")
        controller = controller_of(pod)
        replica_set = None
        if controller is not None and controller.kind == "ReplicaSet":
            path = resource_for("apps/v1", "ReplicaSet").path(namespace, controller.name)
            replica_set = self._get(path)
        owner = workload_of(pod, replica_set)
        if owner is None:
            return None
        return self.read_scale(owner.kind, namespace, owner.name, uid=owner.uid)

    def read_scale(
        self, kind: str, namespace: str, name: str, *, uid: str | None = None
    ) -> WorkloadState | None:
        """A Deployment's or StatefulSet's replicas; None if gone (or replaced, given ``uid``)."""
        if kind not in ("Deployment", "StatefulSet"):
            return None
        scale = self._get(resource_for("apps/v1", kind).path(namespace, name, "scale"))
        if scale is None:
            return None
        meta = scale.get("metadata") or {}
        if uid is not None and meta.get("uid") != uid:
            return None
        replicas = (scale.get("spec") or {}).get("replicas") or 0
        return WorkloadState(kind, name, namespace, str(meta.get("uid") or ""), int(replicas))

    def _get(self, path: str) -> dict[str, Any] | None:
        try:
            return self.rest.get(path)
        except NotFound:
            return None

    # -- execution -----------------------------------------------------------------------------

    def run(self, step: PlannedStep, alert: AlertIdentity) -> StepOutcome:
        """Send a step's operations in order; stop at the first that fails."""
        done: list[str] = []
        for op in step.operations:
            try:
                done.append(self.apply(op, alert, action=step.action))
            except _Skipped as exc:
                return StepOutcome(ActionResult.SKIPPED, _joined(done, str(exc)))
            except Forbidden as exc:
                message = forbidden_message(
                    _permission(op), op.target.namespace, chart_grant(step.type), exc
                )
                return StepOutcome(ActionResult.FORBIDDEN, _joined(done, message))
            except (Transient, Conflict) as exc:
                what = f"{op.describe()}: {exc.message}"
                return StepOutcome(ActionResult.FAILED, _joined(done, what), retryable=True)
            except ApiError as exc:
                what = f"{op.describe()}: {exc.message}"
                return StepOutcome(ActionResult.FAILED, _joined(done, what))
            except WebhookError as exc:
                return StepOutcome(ActionResult.FAILED, _joined(done, str(exc)))
        return StepOutcome(ActionResult.APPLIED, "; ".join(done) or "nothing to send")

    def apply(self, op: Operation, alert: AlertIdentity, *, action: str = "") -> str:
        """Send one operation idempotently; a short description of what happened."""
        if op.verb == Verb.CREATE:
            return self._create(op, alert)
        if op.verb == Verb.PATCH:
            return self._patch(op)
        if op.verb == Verb.DELETE:
            return self._delete(op)
        if op.verb == Verb.EVENT:
            return self._event(op, alert, action)
        if op.verb == Verb.WEBHOOK:
            return self._webhook(op)
        raise ApiError(f"unknown operation {op.verb!r}")

    def _create(self, op: Operation, alert: AlertIdentity) -> str:
        ref = op.target
        resource = resource_for(ref.api_version, ref.kind)
        try:
            self.rest.create(resource.path(ref.namespace), op.body, field_manager=FIELD_MANAGER)
            return f"created {_show(ref)}"
        except Conflict as exc:
            if not exc.already_exists:
                raise
        existing = self._get(resource.path(ref.namespace, ref.name))
        if existing is None:
            raise Conflict(f"{_show(ref)} existed and is gone now; trying again")
        if not is_ours(existing, alert.name, alert.uid or None):
            raise Conflict(
                f"{_show(ref)} exists but was not made for this alert (an earlier alert's "
                "object still being garbage-collected, or someone else's)"
            )
        return f"{_show(ref)} already exists (ours)"

    def _patch(self, op: Operation) -> str:
        ref = op.target
        resource = resource_for(ref.api_version, ref.kind)
        path = resource.path(ref.namespace, ref.name, op.subresource)
        try:
            self.rest.merge_patch(path, op.body, field_manager=FIELD_MANAGER)
        except NotFound:
            raise _Skipped(f"{_show(ref)} no longer exists") from None
        except Invalid as exc:
            if "metadata.uid" in exc.message:
                raise _Skipped(
                    f"{_show(ref)} was replaced by a new object of the same name since it "
                    "was read; the new one is not the alert's target"
                ) from None
            raise
        return f"patched {_show(ref)}{'/' + op.subresource if op.subresource else ''}"

    def _delete(self, op: Operation) -> str:
        ref = op.target
        resource = resource_for(ref.api_version, ref.kind)
        try:
            self.rest.delete(resource.path(ref.namespace, ref.name), op.body or None)
        except NotFound:
            return f"{_show(ref)} was already gone"
        except Conflict as exc:
            if "precondition" in exc.message.lower():
                raise _Skipped(
                    f"{_show(ref)} was replaced by a new object of the same name since it "
                    "was read; the new one is not the alert's target"
                ) from None
            raise
        return f"deleted {_show(ref)}"

    def _event(self, op: Operation, alert: AlertIdentity, action: str) -> str:
        ref = op.target
        namespace = ref.namespace or alert.namespace
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        digest = hashlib.sha256(f"{alert.uid}/{action}".encode()).hexdigest()[:_HASH_CHARS]
        name = f"{ref.name[: _EVENT_NAME_MAX - _HASH_CHARS - 1]}.{digest}"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": ref.kind,
                "name": ref.name,
                "namespace": namespace,
                "uid": alert.uid,
            },
            "type": op.body.get("type", "Normal"),
            "reason": op.body.get("reason", "PolicyNotify"),
            "message": op.body.get("message", ""),
            "source": {"component": EVENT_SOURCE},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        path = resource_for("v1", "Event").path(namespace)
        try:
            self.rest.create(path, body, field_manager=FIELD_MANAGER)
        except Conflict as exc:
            if not exc.already_exists:
                raise
            return f"Event {body['reason']} was already recorded"
        return f"recorded Event {body['reason']}"

    def _webhook(self, op: Operation) -> str:
        ref = op.target
        secret = self._get(resource_for("v1", "Secret").path(ref.namespace, ref.name))
        where = f"Secret {ref.namespace}/{ref.name}"
        if secret is None:
            raise WebhookError(f"{where} does not exist")
        encoded = (secret.get("data") or {}).get(op.secret_key or "")
        if not encoded:
            raise WebhookError(f"{where} has no key {op.secret_key!r}")
        try:
            url = base64.b64decode(encoded, validate=True).decode("utf-8").strip()
        except (binascii.Error, UnicodeDecodeError):
            raise WebhookError(f"{where} key {op.secret_key!r} is not a URL") from None
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise WebhookError(f"{where} key {op.secret_key!r} is not an http(s) URL")
        # NB: the URL is a credential (Slack-style webhooks carry their token in the path):
        # it goes in no message, log line or status field.
        try:
            with httpx.Client(
                timeout=self._webhook_timeout,
                follow_redirects=False,
                transport=self._webhook_transport,
            ) as http:
                response = http.post(url, json=op.body)
        except httpx.TimeoutException:
            raise WebhookError(
                f"the webhook in {where} did not answer within "
                f"{self._webhook_timeout.read or self._webhook_timeout.connect} s"
            ) from None
        except httpx.HTTPError as exc:
            raise WebhookError(
                f"the webhook in {where} could not be reached ({type(exc).__name__})"
            ) from None
        if not 200 <= response.status_code <= 299:
            raise WebhookError(f"the webhook in {where} answered HTTP {response.status_code}")
        return f"posted to the webhook in {where} (HTTP {response.status_code})"


def _permission(op: Operation) -> str:
    ref = op.target
    if op.verb == Verb.EVENT:
        return permission_text("create", resource_for("v1", "Event"))
    resource = resource_for(ref.api_version, ref.kind)
    return permission_text(_RBAC_VERBS[op.verb], resource, op.subresource)


def _show(ref: ObjectRef) -> str:
    where = f"{ref.namespace}/{ref.name}" if ref.namespace else ref.name
    return f"{ref.kind} {where}"


def _joined(done: list[str], last: str) -> str:
    return "; ".join([*done, last])


# -- the FalcoAlert itself ----------------------------------------------------------------------


def alert_path(namespace: str, name: str) -> str:
    return resource_for(API_VERSION, "FalcoAlert").path(namespace, name)


def read_alert(rest: RestClient, namespace: str, name: str) -> dict[str, Any] | None:
    """The FalcoAlert as stored now (kopf's body may predate our own status writes)."""
    try:
        return rest.get(alert_path(namespace, name))
    except NotFound:
        return None


def patch_alert_status(
    rest: RestClient, namespace: str, name: str, status: Mapping[str, Any]
) -> dict[str, Any]:
    """Merge-patch the alert's status; the alert as stored afterwards (new resourceVersion)."""
    return rest.merge_patch(
        alert_path(namespace, name) + "/status",
        {"status": dict(status)},
        field_manager=FIELD_MANAGER,
    )


def ensure_finalizer(
    rest: RestClient,
    namespace: str,
    name: str,
    finalizer: str,
    *,
    known: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Add ``finalizer`` to the alert unless present; the alert after, or None if gone or going.

    A merge patch replaces the whole list, so it carries the resourceVersion it was computed
    from: if anyone changed the object in between, the API server answers 409 and we re-read.
    ``known`` is the alert as last written by the caller, which saves the first read.
    """
    path = alert_path(namespace, name)
    current = dict(known) if known is not None else None
    for _ in range(_CONFLICT_ROUNDS):
        if current is None:
            current = read_alert(rest, namespace, name)
            if current is None:
                return None
        meta = current.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return None
        finalizers = list(meta.get("finalizers") or [])
        if finalizer in finalizers:
            return current
        body = {
            "metadata": {
                "resourceVersion": meta.get("resourceVersion"),
                "finalizers": [*finalizers, finalizer],
            }
        }
        try:
            return rest.merge_patch(path, body, field_manager=FIELD_MANAGER)
        except Conflict:
            current = None  # changed since: read it again
        except NotFound:
            return None
    raise Conflict(f"FalcoAlert {namespace}/{name}: finalizer not added after conflicts")

"""Create FalcoAlerts and add occurrences to them, exactly, from any number of writers.

The object's name is deterministic (see :mod:`falco_triage.events.fingerprint`), so every
receiver replica writes the same object. Counting stays exact because every change to
``status.occurrences`` is a merge patch carrying the ``resourceVersion`` it was computed from:
if anyone wrote in between, the API server answers 409 and we read again and recompute.

A new alert takes two requests: the API server drops ``status`` on create for resources with a
status subresource, so the object is created first and its occurrences are patched in.

When a patch is sent but no answer comes back (connection reset, timeout), the write may or
may not have been applied. :class:`WriteUnknown` carries a :class:`Doubt` — the version the
write was based on and the count it would have produced — and the next :meth:`AlertStore.record`
for that alert reads the object first: unchanged version ⇒ not applied; a count at least as high
as intended ⇒ applied (so it is never counted twice).
"""

from __future__ import annotations

import functools
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubernetes import client
from pydantic import ValidationError

from falco_triage.k8s.errors import (
    ApiError,
    Conflict,
    Forbidden,
    NotFound,
    Transient,
    translated,
)
from falco_triage.models.alert import KIND, PLURAL, FalcoAlertSpec, Occurrences, Phase
from falco_triage.models.common import API_VERSION, GROUP, VERSION

log = logging.getLogger(__name__)

FIELD_MANAGER = "falco-triage-ingest"
MANAGED_BY = "app.kubernetes.io/managed-by"
FINGERPRINT_LABEL = "falcotriage.io/fingerprint"
PRIORITY_LABEL = "falcotriage.io/priority"
SOURCE_LABEL = "falcotriage.io/source"
RULE_LABEL = "falcotriage.io/rule"

# Writers racing on one object each lose at most once per winner; this many rounds means
# something is badly wrong (or dozens of replicas), and the caller retries later anyway.
_MAX_ROUNDS = 16
_CONFLICT_JITTER = 0.005  # seconds, times the attempt number
_MERGE_PATCH = "application/merge-patch+json"
_LABEL_VALUE_DROP = re.compile(r"[^A-Za-z0-9_.\-]+")

Observer = Callable[[str, str | None], None]
"""Called after each API request with the operation and the error reason (None on success)."""


@dataclass(frozen=True, slots=True)
class Delta:
    """Occurrences to add to an alert."""

    count: int
    first_seen: datetime
    last_seen: datetime


@dataclass(frozen=True, slots=True)
class Stored:
    """What this writer last saw of an alert; lets the next write skip the read."""

    resource_version: str
    occurrences: Occurrences | None
    phase: str | None = None


@dataclass(frozen=True, slots=True)
class Doubt:
    """A status write that got no answer: what it was based on and what it would have made."""

    resource_version: str
    count_after: int
    count: int


@dataclass(frozen=True, slots=True)
class Recorded:
    created: bool
    stored: Stored
    already_counted: int = 0
    """Occurrences of a doubtful earlier write found applied, so not added again."""


class WriteUnknown(Transient):
    """A status write was sent and its answer lost; retry with ``doubt`` to stay exact."""

    def __init__(self, cause: Transient, doubt: Doubt) -> None:
        super().__init__(
            f"outcome unknown: {cause.message}",
            status=cause.status,
            reason=cause.reason,
            retry_after=cause.retry_after,
            maybe_applied=True,
        )
        self.doubt = doubt


class NamespaceUnavailable(ApiError):
    """The alert's namespace does not exist or is being deleted."""


def alert_body(name: str, namespace: str, spec: FalcoAlertSpec) -> dict[str, Any]:
    """The FalcoAlert object to create, with labels for selecting by priority, source, rule."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                MANAGED_BY: "falco-triage",
                FINGERPRINT_LABEL: spec.fingerprint[:40],
                PRIORITY_LABEL: spec.priority.value,
                SOURCE_LABEL: _label_value(spec.source),
                RULE_LABEL: _label_value(name.rsplit("-", 1)[0]),
            },
        },
        "spec": spec.wire(),
    }


class AlertStore:
    """FalcoAlert writes for the receiver. Blocking: run it in a worker thread.

    ``throttle`` is called before every request (the receiver's token bucket) and
    ``observe`` after it, for metrics.
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        field_manager: str = FIELD_MANAGER,
        throttle: Callable[[], None] | None = None,
        observe: Observer | None = None,
        timeout: tuple[float, float] = (5.0, 15.0),
    ) -> None:
        self._api = client.CustomObjectsApi(api)
        self._field_manager = field_manager
        self._throttle = throttle or (lambda: None)
        self._observe = observe or (lambda _op, _err: None)
        self._timeout = timeout

    def record(
        self,
        namespace: str,
        name: str,
        spec: Callable[[], FalcoAlertSpec],
        delta: Delta,
        *,
        known: Stored | None = None,
        doubt: Doubt | None = None,
    ) -> Recorded:
        """Add ``delta`` to the alert ``namespace/name``, creating it from ``spec()`` if needed.

        Raises :class:`WriteUnknown` when a write's outcome is unknown, ``NamespaceUnavailable``,
        and the :mod:`~falco_triage.k8s.errors` classes for everything else.
        """
        already = 0
        state = known
        if doubt is not None:
            state, already = self._resolve(namespace, name, doubt)
            if already >= delta.count and state is not None:
                return Recorded(created=False, stored=state, already_counted=already)
            delta = Delta(delta.count - already, delta.first_seen, delta.last_seen)
        created = False
        for attempt in range(_MAX_ROUNDS):
            if state is None:
                state, made = self._create_or_read(namespace, name, spec)
                created = created or made
            body, after = _status_patch(state, delta)
            patch = functools.partial(
                self._api.patch_namespaced_custom_object_status,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                body,
                field_manager=self._field_manager,
                _content_type=_MERGE_PATCH,
                _request_timeout=self._timeout,
            )
            try:
                result = self._call("patch_status", write=True, call=patch)
            except Conflict:
                # Someone else wrote first (another replica, or the operator's own status):
                # read their count and recompute. The object exists, so read it rather than
                # try a create that would only answer AlreadyExists.
                # Jitter so racing replicas stop colliding in lockstep (client-go does too).
                time.sleep(random.uniform(0, _CONFLICT_JITTER * (attempt + 1)))  # noqa: S311
                state = self._read(namespace, name)
                continue
            except NotFound:
                state = None  # deleted since we read it: create it again
                continue
            except Transient as exc:
                if exc.maybe_applied:
                    doubt = Doubt(state.resource_version, after.count, delta.count)
                    raise WriteUnknown(exc, doubt) from exc
                raise
            return Recorded(created, _stored(result), already)
        raise Conflict(f"{namespace}/{name}: gave up after {_MAX_ROUNDS} conflicting writes")

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "get",
            write=False,
            call=lambda: self._api.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _request_timeout=self._timeout
            ),
        )
        return result

    def _read(self, namespace: str, name: str) -> Stored | None:
        """The alert as it is now, or None once it is gone (to be created again)."""
        try:
            return _stored(self.get(namespace, name))
        except NotFound:
            return None

    def _create_or_read(
        self, namespace: str, name: str, spec: Callable[[], FalcoAlertSpec]
    ) -> tuple[Stored, bool]:
        body = alert_body(name, namespace, spec())
        try:
            created = self._call(
                "create",
                write=True,
                call=lambda: self._api.create_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    body,
                    field_manager=self._field_manager,
                    _request_timeout=self._timeout,
                ),
            )
            return _stored(created), True
        except Conflict as exc:
            if not exc.already_exists:
                raise
        except NotFound as exc:
            if exc.details.get("kind") == "namespaces":
                raise NamespaceUnavailable(
                    exc.message, status=exc.status, reason=exc.reason
                ) from exc
            raise
        except Forbidden as exc:
            if "being terminated" in exc.message:
                raise NamespaceUnavailable(
                    exc.message, status=exc.status, reason=exc.reason
                ) from exc
            raise
        # A lost create answer is harmless: create carries no count, and a retry lands here.
        existing = self.get(namespace, name)
        theirs = (existing.get("spec") or {}).get("fingerprint")
        if theirs != body["spec"]["fingerprint"]:
            log.error(
                "FalcoAlert %s/%s exists with fingerprint %s, expected %s; adding occurrences "
                "to it anyway (a 64-bit name collision, or the object was edited)",
                namespace,
                name,
                theirs,
                body["spec"]["fingerprint"],
            )
        return _stored(existing), False

    def _resolve(self, namespace: str, name: str, doubt: Doubt) -> tuple[Stored | None, int]:
        """Whether a doubtful write was applied: (state to continue from, count it added)."""
        current = self._read(namespace, name)
        if current is None:
            return None, 0
        if current.resource_version == doubt.resource_version:
            return current, 0
        count = current.occurrences.count if current.occurrences else 0
        if count >= doubt.count_after:
            return current, doubt.count
        return current, 0

    def _call(self, operation: str, *, write: bool, call: Callable[[], Any]) -> Any:
        self._throttle()
        try:
            with translated(write=write):
                result = call()
        except ApiError as exc:
            self._observe(operation, exc.reason or type(exc).__name__)
            raise
        self._observe(operation, None)
        return result


def _status_patch(state: Stored, delta: Delta) -> tuple[dict[str, Any], Occurrences]:
    current = state.occurrences
    if current is None:
        after = Occurrences(
            count=delta.count, first_seen=delta.first_seen, last_seen=delta.last_seen
        )
    else:
        after = Occurrences(
            count=current.count + delta.count,
            first_seen=min(current.first_seen, delta.first_seen),
            last_seen=max(current.last_seen, delta.last_seen),
        )
    status: dict[str, Any] = {"occurrences": after.wire()}
    if state.phase is None:
        status["phase"] = Phase.RECEIVED.value
    # NB: resourceVersion in a merge patch is a precondition: 409 unless it is still current.
    body = {"metadata": {"resourceVersion": state.resource_version}, "status": status}
    return body, after


def _stored(obj: dict[str, Any]) -> Stored:
    version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    status = obj.get("status") or {}
    raw = status.get("occurrences")
    occurrences = None
    if isinstance(raw, dict):
        try:
            occurrences = Occurrences.model_validate(raw)
        except ValidationError:
            log.warning("ignoring malformed status.occurrences %r", raw)
    phase = status.get("phase")
    return Stored(version, occurrences, phase if isinstance(phase, str) else None)


def _label_value(text: str) -> str:
    return _LABEL_VALUE_DROP.sub("-", text)[:63].strip("-_.") or "unknown"

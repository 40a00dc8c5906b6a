"""What the adapter executes: operations grouped into one step per policy action.

An :class:`Operation` is one API call, fully built: the adapter does not compute anything,
it only sends. Every operation is idempotent, so a step can be re-run after a crash:

- ``create``: create-or-get by deterministic name; on 409 the adapter reads the object and
  checks it is ours (:func:`falco_triage.remediation.names.is_ours`), otherwise it fails.
- ``patch``: a JSON merge patch (``application/merge-patch+json``); applying it twice is a
  no-op. Pod patches carry ``metadata.uid``: the API server rejects a patch whose uid differs,
  so a pod recreated under the same name is never touched by mistake.
- ``delete``: 404 counts as success; DeleteOptions in ``body`` (uid precondition included).
- ``event``: a Kubernetes Event on the FalcoAlert (``body``: type, reason, message).
- ``webhook``: POST ``body`` as JSON to the URL stored in ``secret_key`` of the Secret
  ``target`` (always in the operator's namespace).

Protocol for one step: skip it if ``done`` is set; record :meth:`PlannedStep.start_record`
(result Planned, ``startedAt``, rollback) *before* the first operation; then record
:meth:`PlannedStep.finish_record` with Applied, Failed or Forbidden. A step with
``skip_reason`` is recorded as Skipped and nothing is sent. In DryRun, record
:meth:`PlannedStep.dry_run_record` and send nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import yaml

from falco_triage.models.alert import ActionRecord, ActionResult, ObjectRef
from falco_triage.models.text import clip

MAX_PLANNED_YAML = 16384  # ActionRecord.planned's bound
MAX_OBJECTS = 8  # ActionRecord.objects' bound

# A result recorded for good: the step is not run again (re-running after a crash only
# happens for steps still Planned).
TERMINAL_RESULTS = frozenset(
    {
        ActionResult.APPLIED,
        ActionResult.SKIPPED,
        ActionResult.FAILED,
        ActionResult.FORBIDDEN,
        ActionResult.ROLLED_BACK,
    }
)


class Verb(StrEnum):
    CREATE = "create"
    PATCH = "patch"
    DELETE = "delete"
    EVENT = "event"
    WEBHOOK = "webhook"


@dataclass(frozen=True)
class Operation:
    """One API call. ``subresource`` is e.g. ``scale``; ``secret_key`` only for webhooks."""

    verb: Verb
    target: ObjectRef
    body: dict[str, Any] = field(default_factory=dict)
    subresource: str | None = None
    secret_key: str | None = None

    def describe(self) -> str:
        ref = self.target
        where = f"{ref.namespace}/{ref.name}" if ref.namespace else ref.name
        sub = f"/{self.subresource}" if self.subresource else ""
        how = {
            Verb.CREATE: "create (or get, if it exists)",
            Verb.PATCH: "merge-patch",
            Verb.DELETE: "delete",
            Verb.EVENT: "record an Event on",
            Verb.WEBHOOK: f"POST to the webhook URL in key {self.secret_key!r} of",
        }[self.verb]
        return f"{how} {ref.api_version} {ref.kind} {where}{sub}"


@dataclass(frozen=True)
class PlannedStep:
    """One policy action, ready to execute (or skipped, with the reason)."""

    action: str
    type: str
    continue_on_error: bool = False
    operations: tuple[Operation, ...] = ()
    skip_reason: str | None = None
    rollback: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    done: ActionResult | None = None

    @property
    def objects(self) -> list[ObjectRef]:
        """The objects this step creates or changes (for the audit record)."""
        seen: list[ObjectRef] = []
        for op in self.operations:
            if op.verb in (Verb.EVENT, Verb.WEBHOOK) or op.target in seen:
                continue
            seen.append(op.target)
        return seen[:MAX_OBJECTS]

    def render(self) -> str:
        """The step as YAML documents, exactly what would be sent (DryRun shows this)."""
        header = f"# {self.type} {self.action!r}"
        if self.skip_reason:
            return f"{header}: skipped: {self.skip_reason}\n"
        parts = [f"{header}{' (continueOnError)' if self.continue_on_error else ''}\n"]
        parts += [f"# note: {note}\n" for note in self.notes]
        for index, op in enumerate(self.operations):
            if index:
                parts.append("---\n")
            parts.append(f"# {op.describe()}\n")
            parts.append(to_yaml(op.body))
        return "".join(parts)

    def dry_run_record(self) -> ActionRecord:
        """DryRun: what would be done, nothing sent."""
        if self.skip_reason:
            return self._record(ActionResult.SKIPPED, f"Would skip: {self.skip_reason}")
        return self._record(ActionResult.PLANNED, "DryRun: not applied")

    def start_record(self, now: datetime) -> ActionRecord:
        """Written before the first operation, so a crash leaves the rollback behind."""
        if self.skip_reason:
            return self._record(ActionResult.SKIPPED, self.skip_reason)
        return self._record(ActionResult.PLANNED, "Applying").model_copy(update={"started_at": now})

    def finish_record(self, result: ActionResult, now: datetime, message: str = "") -> ActionRecord:
        record = self._record(result, message or result.value)
        update: dict[str, Any] = {"started_at": now}
        if result == ActionResult.APPLIED:
            update["applied_at"] = now
        return record.model_copy(update=update)

    def _record(self, result: ActionResult, message: str) -> ActionRecord:
        return ActionRecord(
            name=self.action,
            type=self.type,
            result=result,
            message=clip(message, 2048),
            objects=self.objects,
            planned=clip(self.render(), MAX_PLANNED_YAML),
            rollback=dict(self.rollback),
        )


class _PlainDumper(yaml.SafeDumper):
    """Never writes ``&anchor``/``*alias``: a reader must see every object in full."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    """Multi-line text as a ``|`` block, the way a person would write it."""
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_PlainDumper.add_representer(str, _text)


def to_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_PlainDumper, sort_keys=False, width=100, allow_unicode=True)


@dataclass(frozen=True)
class WorkloadState:
    """The Deployment or StatefulSet that owns the pod, as the adapter read it."""

    kind: str
    name: str
    namespace: str
    uid: str
    replicas: int

"""The FalcoAlert custom resource: spec is the first event, status is everything we learned."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from falco_triage.models.analysis import Analysis
from falco_triage.models.common import API_VERSION, ApiModel, Condition
from falco_triage.models.narrative import NarrativeStatus
from falco_triage.models.policy import Action, Mode
from falco_triage.models.priority import Priority

KIND = "FalcoAlert"
PLURAL = "falcoalerts"

# NB: kube-apiserver rejects objects over ~1.5 MiB; these caps keep one alert far below it.
MAX_OUTPUT = 8192
MAX_FIELD_VALUE = 4096
MAX_FIELDS = 64
MAX_TAGS = 32
MAX_REPORT = 32 * 1024


class TargetKind(StrEnum):
    POD = "Pod"
    HOST = "Host"
    KUBERNETES_OBJECT = "KubernetesObject"


class Target(ApiModel):
    """What the alert concerns, derived from the event's fields."""

    kind: TargetKind
    display: str = Field(max_length=512, description="namespace/pod, host name or resource")
    namespace: str | None = Field(default=None, max_length=63)
    pod: str | None = Field(default=None, max_length=253)
    container_id: str | None = Field(default=None, max_length=128)
    container_name: str | None = Field(default=None, max_length=253)
    image: str | None = Field(default=None, max_length=1024)
    node: str | None = Field(default=None, max_length=253)
    resource: str | None = Field(default=None, max_length=253, description="k8s_audit resource")
    resource_name: str | None = Field(default=None, max_length=253)


class FalcoAlertSpec(ApiModel):
    """The normalized Falco event that first created the alert (bounded and redacted)."""

    rule: str = Field(min_length=1, max_length=512)
    priority: Priority
    source: str = Field(min_length=1, max_length=64)
    time: datetime
    hostname: str | None = Field(default=None, max_length=253)
    output: str | None = Field(default=None, max_length=MAX_OUTPUT + 64)
    output_fields: dict[str, str | None] = Field(
        default_factory=dict,
        max_length=MAX_FIELDS,
        description="Falco output fields as text; numbers are stringified, secrets redacted",
    )
    tags: list[str] = Field(default_factory=list, max_length=MAX_TAGS)
    uuid: str | None = Field(default=None, max_length=64)
    fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$")
    target: Target


class Phase(StrEnum):
    RECEIVED = "Received"
    ANALYZED = "Analyzed"
    DRY_RUN = "DryRun"
    PENDING_APPROVAL = "PendingApproval"
    REMEDIATED = "Remediated"
    NO_ACTION = "NoAction"
    FAILED = "Failed"
    ROLLED_BACK = "RolledBack"
    RESOLVED = "Resolved"


class Occurrences(ApiModel):
    count: int = Field(ge=1)
    first_seen: datetime
    last_seen: datetime


class ObjectRef(ApiModel):
    api_version: str
    kind: str
    namespace: str | None = None
    name: str


class ActionResult(StrEnum):
    PLANNED = "Planned"
    APPLIED = "Applied"
    SKIPPED = "Skipped"
    FAILED = "Failed"
    FORBIDDEN = "Forbidden"
    ROLLED_BACK = "RolledBack"


class ActionRecord(ApiModel):
    """The audit record of one policy action on this alert (one per action, ever)."""

    name: str = Field(max_length=128)
    type: str = Field(max_length=64)
    result: ActionResult
    message: str = Field(default="", max_length=2048)
    objects: list[ObjectRef] = Field(default_factory=list, max_length=8)
    planned: str | None = Field(default=None, max_length=16384, description="Object(s) as YAML")
    started_at: datetime | None = Field(
        default=None,
        description="Set just before the action is applied: with result Planned, the outcome "
        "is not yet known (a crash happened), so the recorded rollback is the one to use",
    )
    applied_at: datetime | None = None
    rolled_back_at: datetime | None = None
    rollback: dict[str, str] = Field(
        default_factory=dict, description="What rollback needs, e.g. previous replicas"
    )


class DecisionOutcome(StrEnum):
    NO_MATCH = "NoMatch"
    MATCHED = "Matched"
    REFUSED = "Refused"
    RATE_LIMITED = "RateLimited"


class Decision(ApiModel):
    """Which policy won and what it asked for; never influenced by model-generated text.

    Only ``outcome == Matched`` leads to actions. The winning policy's actions are copied into
    ``actionSpecs`` so that what runs (after approval, or on a retry) is exactly what was
    decided, even if the policy is edited in between.
    """

    outcome: DecisionOutcome
    summary: str = Field(default="", max_length=256, description="Printer-column text")
    policy: str | None = Field(
        default=None,
        max_length=512,
        description="ResponsePolicy/<namespace>/<name> or ClusterResponsePolicy/<name>",
    )
    policy_generation: int | None = None
    mode: Mode | None = None
    reason: str = Field(default="", max_length=2048)
    actions: list[str] = Field(default_factory=list, max_length=32)
    action_specs: list[Action] = Field(default_factory=list, max_length=16)
    ttl_seconds: int | None = Field(default=None, ge=1, description="Roll back this long after")
    also_matched: list[str] = Field(
        default_factory=list, max_length=32, description="Policies that matched but lost"
    )
    decided_at: datetime | None = None
    approved_by: str | None = Field(default=None, max_length=512)


class Remediation(ApiModel):
    actions: list[ActionRecord] = Field(default_factory=list, max_length=32)
    expires_at: datetime | None = None


class FalcoAlertStatus(ApiModel):
    phase: Phase = Phase.RECEIVED
    occurrences: Occurrences | None = None
    analysis: Analysis | None = None
    report: str | None = Field(default=None, max_length=MAX_REPORT)
    narrative: NarrativeStatus | None = Field(
        default=None, description="Optional model-generated narrative; never used for decisions"
    )
    decision: Decision | None = None
    remediation: Remediation | None = None
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None


class FalcoAlert(ApiModel):
    api_version: str = API_VERSION
    kind: str = KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: FalcoAlertSpec
    status: FalcoAlertStatus | None = None

"""ResponsePolicy and ClusterResponsePolicy: when and how to respond to an alert.

Shapes the API server can check are enforced in the CRD (patterns, enums, CEL); the rest
(e.g. that globs compile, that a referenced Secret key is named) is checked by the operator,
which sets an ``Invalid`` condition instead of acting on a policy it does not understand.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import ConfigDict, Field

from falco_triage.models.common import API_VERSION, ApiModel, Condition
from falco_triage.models.priority import Priority

DURATION_PATTERN = r"^([0-9]+(s|m|h|d))+$"
LABEL_KEY_PATTERN = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"

# Pod labels the operator owns: ``isolatePod`` selects the pod through one of these, so
# ``labelPod`` may never set or overwrite them.
OPERATOR_LABEL_PREFIX = "falcotriage.io/"
ISOLATION_LABEL_PREFIX = OPERATOR_LABEL_PREFIX + "isolated-"

# ``status.recentlyCounted`` keeps the newest this many entries. An entry is only needed from the
# moment an alert is counted until its phase is written (normally milliseconds; after a crash,
# until the restarted operator picks the alert up again). Alerts in that state at once are at
# most the responses in flight (``operator.maxConcurrentAlerts``, 64 by default): 200 entries
# (two per acting alert, so at least 100 alerts) cover them with room to spare, for about 9 KiB.
# An alert is counted twice only if over 100 other alerts of its policy are counted between a
# crash and its re-run (docs/policies.md, "Rate limits and counters").
MAX_RECENTLY_COUNTED = 200
# ``<alert uid>`` (a UUID, 36 characters) or ``<alert uid>/actions``.
COUNTED_KEY_MAX_LENGTH = 64
CountedKey = Annotated[str, Field(min_length=1, max_length=COUNTED_KEY_MAX_LENGTH)]

ACTION_TYPES = ("labelPod", "annotatePod", "isolatePod", "deletePod", "scaleWorkload", "notify")
_ONE_ACTION_CEL = (
    "[" + ", ".join(f"has(self.{t})" for t in ACTION_TYPES) + "].filter(x, x).size() == 1"
)


def _cel(rule: str, message: str) -> ConfigDict:
    """A CEL validation rule the API server enforces on the object this model describes."""
    return ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [{"rule": rule, "message": message}]}
    )


class Mode(StrEnum):
    DRY_RUN = "DryRun"
    REQUIRE_APPROVAL = "RequireApproval"
    ENFORCE = "Enforce"


class FieldOperator(StrEnum):
    EQUALS = "equals"
    NOT_EQUALS = "notEquals"
    IN = "in"
    GLOB = "glob"
    PREFIX = "prefix"


class FieldCondition(ApiModel):
    """A condition on one Falco output field, e.g. ``proc.name in [nc, ncat]``."""

    field: str = Field(min_length=1, max_length=128)
    operator: FieldOperator
    value: str | None = Field(default=None, max_length=1024)
    values: list[str] = Field(default_factory=list, max_length=64)

    model_config = ApiModel.model_config | _cel(
        "self.operator == 'in'"
        " ? (has(self.values) && size(self.values) > 0 && !has(self.value))"
        " : (has(self.value) && (!has(self.values) || size(self.values) == 0))",
        "operator 'in' takes values (a list); every other operator takes value (one string)",
    )


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class SelectorRequirement(ApiModel):
    key: str = Field(max_length=317)
    operator: SelectorOperator
    values: list[str] = Field(default_factory=list, max_length=64)

    model_config = ApiModel.model_config | _cel(
        "self.operator in ['In', 'NotIn']"
        " ? (has(self.values) && size(self.values) > 0)"
        " : (!has(self.values) || size(self.values) == 0)",
        "In and NotIn need values; Exists and DoesNotExist take none",
    )


class LabelSelector(ApiModel):
    """The standard Kubernetes label selector."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[SelectorRequirement] = Field(default_factory=list)


class TagMatch(ApiModel):
    any: list[str] = Field(default_factory=list, max_length=32)
    all: list[str] = Field(default_factory=list, max_length=32)


class Match(ApiModel):
    """Every set criterion must hold (AND); list criteria match any element (OR)."""

    rules: list[str] = Field(
        default_factory=list, max_length=64, description="Rule names; shell-style globs allowed"
    )
    min_priority: Priority | None = None
    tags: TagMatch | None = None
    sources: list[str] = Field(default_factory=list, max_length=8)
    pod_selector: LabelSelector | None = None
    output_fields: list[FieldCondition] = Field(default_factory=list, max_length=32)


class ClusterMatch(Match):
    """A cluster policy also chooses namespaces, by name glob and/or by label."""

    namespaces: list[str] = Field(default_factory=list, max_length=64, description="Globs")
    namespace_selector: LabelSelector | None = None


class LabelPod(ApiModel):
    labels: dict[str, str] = Field(min_length=1, max_length=16)


class AnnotatePod(ApiModel):
    annotations: dict[str, str] = Field(min_length=1, max_length=16)


class IsolatePod(ApiModel):
    """A NetworkPolicy selecting exactly the alert's pod."""

    deny_ingress: bool = True
    deny_egress: bool = True
    allow_dns: bool = Field(default=True, description="Keep egress to kube-dns on port 53")
    allow_cidrs: list[str] = Field(default_factory=list, max_length=32)
    allow_namespaces: list[str] = Field(default_factory=list, max_length=32)

    model_config = ApiModel.model_config | _cel(
        "(!has(self.denyIngress) || self.denyIngress)"
        " || (!has(self.denyEgress) || self.denyEgress)",
        "isolatePod must deny ingress, egress or both",
    )


class DeletePod(ApiModel):
    grace_period_seconds: int = Field(default=30, ge=0, le=3600)
    allow_bare_pods: bool = Field(
        default=False, description="Also delete pods no controller will recreate"
    )


class ScaleWorkload(ApiModel):
    """Scale the pod's owning Deployment or StatefulSet to zero; rollback restores replicas."""

    kinds: list[str] = Field(default_factory=lambda: ["Deployment", "StatefulSet"], max_length=2)


class SecretKeyRef(ApiModel):
    name: str = Field(max_length=253)
    key: str = Field(max_length=253)


class Notify(ApiModel):
    event: bool = Field(default=True, description="Record a Kubernetes Event on the alert")
    webhook_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding a Slack-compatible webhook URL"
    )

    model_config = ApiModel.model_config | _cel(
        "(!has(self.event) || self.event) || has(self.webhookSecretRef)",
        "notify needs event: true or a webhookSecretRef",
    )


class Action(ApiModel):
    """One step of a response; exactly one action type is set."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    continue_on_error: bool = False
    label_pod: LabelPod | None = None
    annotate_pod: AnnotatePod | None = None
    isolate_pod: IsolatePod | None = None
    delete_pod: DeletePod | None = None
    scale_workload: ScaleWorkload | None = None
    notify: Notify | None = None

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": _ONE_ACTION_CEL,
                    "message": "each action sets exactly one of: " + ", ".join(ACTION_TYPES),
                }
            ]
        }
    }

    @property
    def type(self) -> str:
        for name in ACTION_TYPES:
            if getattr(self, _snake(name)) is not None:
                return name
        raise ValueError(f"action {self.name!r} sets no action type")

    @property
    def set_types(self) -> list[str]:
        """Every action type this action sets; a valid action sets exactly one."""
        return [name for name in ACTION_TYPES if getattr(self, _snake(name)) is not None]


class RateLimit(ApiModel):
    max_actions: int = Field(ge=1, le=10000)
    window: str = Field(pattern=DURATION_PATTERN)


class ResponsePolicySpec(ApiModel):
    match: Match
    mode: Mode = Mode.DRY_RUN
    actions: list[Action] = Field(min_length=1, max_length=16)
    ttl: str | None = Field(default=None, pattern=DURATION_PATTERN, description="Roll back after")
    rate_limit: RateLimit | None = None
    precedence: int = Field(
        default=0, ge=-1000, le=1000, description="Higher wins when several policies match"
    )


class ClusterResponsePolicySpec(ResponsePolicySpec):
    match: ClusterMatch


class PolicyStatus(ApiModel):
    conditions: list[Condition] = Field(default_factory=list)
    matched_alerts: int = Field(default=0, description="Alerts this policy won, any outcome")
    actions_taken: int = Field(default=0, description="Actions it applied")
    recently_counted: list[CountedKey] = Field(
        default_factory=list,
        max_length=MAX_RECENTLY_COUNTED,
        description="The alerts counted last, newest last, so that a re-run after a crash does "
        "not count one twice: '<alert uid>' is in matchedAlerts, '<alert uid>/actions' its "
        "actions in actionsTaken",
    )
    observed_generation: int | None = None


class ResponsePolicy(ApiModel):
    api_version: str = API_VERSION
    kind: str = "ResponsePolicy"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ResponsePolicySpec
    status: PolicyStatus | None = None


class ClusterResponsePolicy(ApiModel):
    api_version: str = API_VERSION
    kind: str = "ClusterResponsePolicy"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ClusterResponsePolicySpec
    status: PolicyStatus | None = None


def _snake(camel: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in camel)

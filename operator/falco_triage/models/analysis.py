"""The structured analysis of one alert: what the report is rendered from.

Values copied from the event are already bounded and redacted; ``None`` means the event did not
carry the field and the report says "unknown" rather than guessing.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from falco_triage.models.common import ApiModel


class SeverityLevel(StrEnum):
    CRITICAL = "Critical"
    HIGH = "High"
    MEDIUM = "Medium"
    LOW = "Low"
    INFO = "Info"


class SeverityAdjustment(ApiModel):
    delta: int = Field(ge=-2, le=2)
    reason: str = Field(max_length=512)


class Severity(ApiModel):
    """Falco priority mapped to a level, then adjusted by context with the reasons recorded."""

    level: SeverityLevel
    base_level: SeverityLevel
    score: int = Field(ge=0, le=4, description="0 (info) to 4 (critical) after adjustments")
    adjustments: list[SeverityAdjustment] = Field(default_factory=list, max_length=16)


class Fact(ApiModel):
    """One piece of evidence: a human label, the Falco field it came from, and its value."""

    label: str = Field(max_length=128)
    field: str = Field(max_length=128)
    value: str | None = Field(default=None, max_length=4096)


class WhatHappened(ApiModel):
    process: str | None = None
    parent: str | None = None
    ancestors: list[str] = Field(default_factory=list, max_length=8)
    user: str | None = None
    uid: str | None = None
    loginuid: str | None = None
    command_line: str | None = None
    object: Fact | None = Field(
        default=None, description="The file, network or API object acted on"
    )
    event_type: str | None = None
    time: str | None = None


class Where(ApiModel):
    node: str | None = None
    namespace: str | None = None
    pod: str | None = None
    container_name: str | None = None
    container_id: str | None = None
    image: str | None = None
    privileged: bool | None = None
    kind: str = Field(description="Pod, Host or KubernetesObject")


class MitreEntry(ApiModel):
    id: str = Field(max_length=16)
    name: str = Field(max_length=128)
    url: str = Field(max_length=256)


class Mitre(ApiModel):
    tactics: list[MitreEntry] = Field(default_factory=list, max_length=16)
    techniques: list[MitreEntry] = Field(default_factory=list, max_length=32)
    source: str = Field(description="tags, knowledgeBase or none")


class BenignCause(ApiModel):
    cause: str = Field(max_length=1024)
    how_to_tell: str = Field(max_length=2048)


class Step(ApiModel):
    """An investigation step; ``command`` is shell-quoted and uses only verified values."""

    description: str = Field(max_length=1024)
    command: str | None = Field(default=None, max_length=4096)


class Tuning(ApiModel):
    exception_fields: list[str] = Field(default_factory=list, max_length=8)
    exception_yaml: str | None = Field(default=None, max_length=8192)
    falco_yaml: str | None = Field(default=None, max_length=4096)
    note: str = Field(default="", max_length=2048)


class Analysis(ApiModel):
    """Everything the report states, each fact traceable to the event or the knowledge base."""

    rule: str = Field(max_length=512)
    known_rule: bool
    ruleset: str | None = None
    kb_version: str
    summary: str = Field(max_length=1024, description="One line: what, who, where")
    detects: str = Field(max_length=4096)
    priority: str
    severity: Severity
    what: WhatHappened
    where: Where
    evidence: list[Fact] = Field(default_factory=list, max_length=64)
    mitre: Mitre
    impact: str = Field(max_length=4096)
    benign: list[BenignCause] = Field(default_factory=list, max_length=16)
    investigate: list[Step] = Field(default_factory=list, max_length=32)
    mitigate: list[str] = Field(default_factory=list, max_length=32)
    tuning: Tuning
    references: list[str] = Field(default_factory=list, max_length=16)

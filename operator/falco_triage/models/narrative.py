"""The optional model-generated narrative and the record of how it was (not) obtained.

A :class:`Narrative` is a language model's answer after validation: plain text, bounded, and
*unverified*. It holds no facts the report relies on, no priority, severity, MITRE mapping or
decision, and nothing in it is ever executed. :class:`NarrativeStatus` is stored in
``status.narrative`` whatever happened, so ``kubectl describe`` shows why there is no narrative
as plainly as it shows one.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from falco_triage.models.common import ApiModel

# NB: at most the report's inline-text limit (1024), so the rendered section shows it whole.
MAX_SUMMARY = 1000
MAX_HYPOTHESIS = 1000
MAX_IDEA = 300
MAX_IDEAS = 8
MAX_REASON = 512


# Bounded per item as well as in count, so the generated CRD schema carries both limits.
Idea = Annotated[str, Field(min_length=1, max_length=MAX_IDEA)]


class Confidence(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class Narrative(ApiModel):
    """A validated model answer. Every string is plain text from an untrusted source."""

    summary: str = Field(min_length=1, max_length=MAX_SUMMARY)
    hypothesis: str = Field(min_length=1, max_length=MAX_HYPOTHESIS)
    investigation_ideas: list[Idea] = Field(
        default_factory=list,
        max_length=MAX_IDEAS,
        description="Extra things to check, as plain text; never run, never verified",
    )
    confidence: Confidence


class NarrativeOutcome(StrEnum):
    OK = "ok"
    FALLBACK = "fallback"
    DISABLED = "disabled"
    BUDGET = "budget"
    BREAKER_OPEN = "breakerOpen"
    ERROR = "error"


class NarrativeStatus(ApiModel):
    """What the narrative step did for one alert: who answered, at what cost, or why not."""

    backend: str = Field(max_length=16, description="openai (compatible) or ollama")
    model: str = Field(default="", max_length=256)
    prompt_version: str = Field(max_length=16)
    latency_ms: int | None = Field(default=None, ge=0)
    prompt_tokens: int | None = Field(default=None, ge=0)
    completion_tokens: int | None = Field(default=None, ge=0)
    cache_hit: bool = False
    outcome: NarrativeOutcome
    reason: str = Field(
        default="",
        max_length=MAX_REASON,
        description="Why there is no narrative (or what was repaired), starting with a code",
    )
    narrative: Narrative | None = None
    generated_at: datetime

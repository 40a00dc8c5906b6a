"""Shared building blocks for the API models: camelCase wire names and status conditions."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "falcotriage.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


class ApiModel(BaseModel):
    """Base for everything stored in Kubernetes: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
    )

    def wire(self) -> dict[str, object]:
        """The JSON-ready form Kubernetes stores (aliases, no unset optionals)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """A Kubernetes-style condition: what is true of the object, since when, and why."""

    type: str = Field(max_length=64)
    status: ConditionStatus
    reason: str = Field(max_length=128, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = Field(default="", max_length=4096)
    last_transition_time: datetime
    observed_generation: int | None = None


def now() -> datetime:
    """Current UTC time truncated to seconds, as Kubernetes stores timestamps."""
    return datetime.now(UTC).replace(microsecond=0)


def set_condition(conditions: list[Condition], new: Condition) -> list[Condition]:
    """Replace the condition of the same type; keep its transition time if status is unchanged."""
    result: list[Condition] = []
    replaced = False
    for cond in conditions:
        if cond.type == new.type:
            replaced = True
            if cond.status == new.status:
                new = new.model_copy(update={"last_transition_time": cond.last_transition_time})
            result.append(new)
        else:
            result.append(cond)
    if not replaced:
        result.append(new)
    return result

"""Shared building blocks for the API models: camelCase wire names and status conditions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

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


def merge_conditions(
    stored: Iterable[Mapping[str, Any]] | None, ours: Iterable[Condition]
) -> list[dict[str, Any]]:
    """The ``status.conditions`` to write back: ``stored`` with each of ``ours`` set by type.

    ``stored`` is the list as last read from the API server, anyone's conditions included.
    Conditions of other types belong to other writers and are kept exactly as stored, in their
    places. Each of ours replaces the stored condition of its type where it stands (appended
    when new; a duplicate of that type further down is dropped), keeping the stored
    ``lastTransitionTime`` when its status did not change: only a change of status is a
    transition, a new reason or message is not.

    NB: a JSON merge patch replaces a list as a whole, so the result is only safe to write
    conditionally on the ``resourceVersion`` ``stored`` was read at (see
    :func:`falco_triage.k8s.status.update_status`).
    """
    mine = {c.type: c.wire() for c in ours}
    result: list[dict[str, Any]] = []
    placed: set[str] = set()
    for cond in stored or []:
        if not isinstance(cond, Mapping):
            continue  # not a condition at all; the schema does not allow it anyway
        kind = cond.get("type")
        if not isinstance(kind, str) or kind not in mine:
            result.append(dict(cond))
            continue
        if kind in placed:
            continue
        placed.add(kind)
        new = dict(mine[kind])
        since = cond.get("lastTransitionTime")
        if cond.get("status") == new["status"] and isinstance(since, str) and since:
            new["lastTransitionTime"] = since
        result.append(new)
    result.extend(wire for kind, wire in mine.items() if kind not in placed)
    return result

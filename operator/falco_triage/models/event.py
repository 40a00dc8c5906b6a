"""The Falco event as Falco's http_output and Falcosidekick's webhook send it.

Every field here is attacker-influenced text (process names, command lines, file names are
chosen by whoever runs code in the container). This model only checks types and shapes;
bounding and redaction happen in :mod:`falco_triage.events` before anything is stored.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from falco_triage.models.priority import Priority

OutputValue = str | int | float | bool | None

# Falco prints RFC 3339 with nanoseconds; datetime keeps microseconds, so trim the rest.
_FRACTION = re.compile(r"(\.\d{6})\d+")


class FalcoEvent(BaseModel):
    """One Falco alert (``json_output: true``), field names exactly as Falco emits them."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    time: datetime
    rule: str = Field(min_length=1)
    priority: Priority
    source: str = "syscall"
    hostname: str | None = None
    output: str | None = None
    output_fields: dict[str, OutputValue] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    uuid: str | None = None

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, value: object) -> Priority:
        if isinstance(value, Priority):
            return value
        if not isinstance(value, str):
            raise ValueError("priority must be a string")
        return Priority.parse(value)

    @field_validator("time", mode="before")
    @classmethod
    def _time(cls, value: object) -> object:
        if isinstance(value, str):
            text = _FRACTION.sub(r"\1", value.strip())
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        return value

    @field_validator("output_fields", mode="before")
    @classmethod
    def _fields(cls, value: object) -> object:
        if value is None:
            return {}
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, dict | list):
                    raise ValueError(
                        f"output_fields[{str(key)[:60]!r}] must be a string, number or null"
                    )
        return value

    def field(self, name: str) -> str | None:
        """A field as text, or None when Falco sent null, ``<NA>`` or nothing."""
        value = self.output_fields.get(name)
        if value is None:
            return None
        text = str(value).lower() if isinstance(value, bool) else str(value)
        return None if text in {"<NA>", ""} else text

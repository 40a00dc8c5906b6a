"""Falco's eight priorities, ordered, with the spellings Falco and its rules use."""

from __future__ import annotations

from enum import StrEnum


class Priority(StrEnum):
    """Falco priority as it appears in JSON output (``json_priority``)."""

    EMERGENCY = "Emergency"
    ALERT = "Alert"
    CRITICAL = "Critical"
    ERROR = "Error"
    WARNING = "Warning"
    NOTICE = "Notice"
    INFORMATIONAL = "Informational"
    DEBUG = "Debug"

    @property
    def rank(self) -> int:
        """Higher is more severe: Emergency is 7, Debug is 0."""
        return _RANK[self]

    @classmethod
    def parse(cls, value: str) -> Priority:
        """Case-insensitive; accepts the rule-file spellings (``INFO``, ``WARN``) too."""
        key = value.strip().lower()
        try:
            return _ALIASES[key]
        except KeyError:
            allowed = ", ".join(p.value for p in cls)
            raise ValueError(
                f"unknown priority {value[:40]!r}; expected one of {allowed}"
            ) from None


_ORDER = [
    Priority.DEBUG,
    Priority.INFORMATIONAL,
    Priority.NOTICE,
    Priority.WARNING,
    Priority.ERROR,
    Priority.CRITICAL,
    Priority.ALERT,
    Priority.EMERGENCY,
]
_RANK = {p: i for i, p in enumerate(_ORDER)}
_ALIASES = {p.value.lower(): p for p in Priority} | {
    "info": Priority.INFORMATIONAL,
    "warn": Priority.WARNING,
    "err": Priority.ERROR,
    "crit": Priority.CRITICAL,
    "emerg": Priority.EMERGENCY,
}

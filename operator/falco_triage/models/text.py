"""Bounding untrusted text: one truncation marker for the whole project."""

from __future__ import annotations

TRUNCATION_MARKER = "…[truncated]"


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in the marker when cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(TRUNCATION_MARKER))] + TRUNCATION_MARKER

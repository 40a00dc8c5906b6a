"""One JSON object → a bounded, redacted, type-checked :class:`FalcoEvent`.

Order matters: secrets are redacted first and only then is the value truncated, so a secret
that straddles the cut can never survive as a prefix. (Values far longer than their limit are
clipped before redaction to bound its cost, with a margin that keeps this true.) Truncation keeps a
visible marker (``…[truncated N chars]``) and never rejects the event: a huge command line is
still evidence. Control characters become U+FFFD (:mod:`falco_triage.events.controls`) after
redaction, whose patterns see the separators as sent, and before the fingerprint, which is
computed from what is stored. Type errors (a number for ``rule``, an object inside
``output_fields``, an unknown priority) reject the event with a message naming the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from falco_triage.events.controls import multiline, single_line
from falco_triage.events.parse import Limits, PayloadError, parse_payload
from falco_triage.events.redact import redact_all
from falco_triage.models.event import FalcoEvent

TRUNCATED_FIELDS_KEY = "falcotriage.io/truncated"
TRUNCATION_MARK = "…[truncated "

# Bounds for the short identifiers; the FalcoAlert model enforces the same numbers.
_MAX_RULE = 512
_MAX_SOURCE = 64
_MAX_HOSTNAME = 253
_MAX_UUID = 64
_MAX_TIME_TEXT = 64
_MAX_ERRORS_SHOWN = 3
_MAX_ERROR_TEXT = 512
_CLIP_MARGIN = 1024

# Kept first when an event has more output fields than allowed: what target resolution and
# the fingerprint read, so truncation never changes where an alert goes or how it aggregates.
_ESSENTIAL_FIELDS = (
    "k8s.ns.name",
    "k8s.pod.name",
    "container.id",
    "container.name",
    "container.image.repository",
    "container.image.tag",
    "container.image",
    "proc.name",
    "proc.exepath",
    "proc.pname",
    "proc.cmdline",
    "user.name",
    "fd.name",
    "fd.sip",
    "fd.rip",
    "ka.target.namespace",
    "ka.target.resource",
    "ka.target.subresource",
    "ka.target.name",
    "ka.resp.name",
    "ka.user.name",
    "ka.verb",
)


def truncate(text: str, limit: int, *, dropped: int = 0) -> str:
    """``text`` cut to at most ``limit`` characters, ending in a marker saying how much went.

    ``dropped`` counts characters already removed before (see :func:`_clip`).
    """
    if len(text) <= limit and not dropped:
        return text
    # The marker's length depends on the count it shows, which depends on the marker's length;
    # the count only grows, so a few rounds settle it (the digits change at most twice).
    keep = limit
    for _ in range(4):
        marker = f"{TRUNCATION_MARK}{len(text) - keep + dropped} chars]"
        keep = max(limit - len(marker), 0)
    marker = f"{TRUNCATION_MARK}{len(text) - keep + dropped} chars]"
    return text[:keep] + marker if keep else marker[:limit]


def _clip(text: str, limit: int) -> tuple[str, int]:
    """Cut a value far past ``limit`` *before* redaction, so its cost is bounded by the limit,
    not by what a sender chose to send. Returns the text and how much was cut."""
    cap = 2 * limit + _CLIP_MARGIN
    return (text[:cap], len(text) - cap) if len(text) > cap else (text, 0)


def _bounded(redacted: str, cut: int, limit: int) -> str:
    """Truncate a redacted value (control characters replaced); if it was clipped, also drop
    the margin before the clip.

    NB: a secret cut in two by the clip may no longer look like a secret (half an AWS key),
    and redactions before it shrink the text and slide that half towards the kept part.
    Dropping the last ``_CLIP_MARGIN`` characters keeps it out: the token shapes recognised
    are shorter than that, except JWTs, whose secret part (the signature) comes last.
    """
    redacted = multiline(redacted)  # one character for one: the arithmetic below holds
    if not cut:
        return truncate(redacted, limit)
    safe = max(len(redacted) - _CLIP_MARGIN, 0)
    return truncate(redacted[:safe], limit, dropped=cut + len(redacted) - safe)


def normalize_event(raw: Mapping[str, Any], limits: Limits) -> FalcoEvent:
    """Bound, redact and type-check one event; :class:`PayloadError` (400) if it is invalid."""
    cleaned = dict(raw)
    _bound_identifiers(cleaned)
    texts: list[str] = []
    cuts: list[int] = []
    output = cleaned.get("output")
    if isinstance(output, str):
        text, cut = _clip(output, limits.max_output_chars)
        texts.append(text)
        cuts.append(cut)
    fields = cleaned.get("output_fields")
    field_items: list[tuple[str, Any]] = []
    if isinstance(fields, Mapping):
        field_items = _select_fields(fields, limits)
        for _, value in field_items:
            if isinstance(value, str):
                text, cut = _clip(value, limits.max_field_chars)
                texts.append(text)
                cuts.append(cut)
    redacted = iter(zip(redact_all(texts), cuts, strict=True)) if texts else iter(())
    if isinstance(output, str):
        cleaned["output"] = _bounded(*next(redacted), limits.max_output_chars)
    if isinstance(fields, Mapping):
        bounded: dict[str, Any] = {}
        for key, value in field_items:
            if isinstance(value, str):
                value = _bounded(*next(redacted), limits.max_field_chars)
            elif (
                isinstance(value, int)
                and not isinstance(value, bool)
                and len(text := str(value)) > 19  # past int64: keep it as text, bounded
            ):
                value = truncate(text, limits.max_field_chars)
            bounded[key] = value
        cleaned["output_fields"] = bounded
    tags = cleaned.get("tags")
    if isinstance(tags, list):
        cleaned["tags"] = [
            truncate(single_line(tag), limits.max_tag_chars) if isinstance(tag, str) else tag
            for tag in tags[: limits.max_tags]
        ]
    try:
        return FalcoEvent.model_validate(cleaned)
    except ValidationError as exc:
        raise PayloadError("invalid_event", _describe(exc)) from None


def normalize_events(raws: Iterable[Mapping[str, Any]], limits: Limits) -> list[FalcoEvent]:
    """:func:`normalize_event` for each; the error names the index of the first bad event."""
    events: list[FalcoEvent] = []
    for index, raw in enumerate(raws):
        try:
            events.append(normalize_event(raw, limits))
        except PayloadError as exc:
            raise PayloadError(exc.code, f"event {index}: {exc.message}", exc.status) from None
    return events


def load_events(body: bytes, limits: Limits | None = None) -> list[FalcoEvent]:
    """Every event in a file or request body, exactly as the receiver would accept them."""
    limits = limits or Limits()
    return normalize_events(parse_payload(body, limits), limits)


def _bound_identifiers(cleaned: dict[str, Any]) -> None:
    for key, limit in (
        ("rule", _MAX_RULE),
        ("source", _MAX_SOURCE),
        ("hostname", _MAX_HOSTNAME),
        ("uuid", _MAX_UUID),
    ):
        value = cleaned.get(key)
        if isinstance(value, str):
            cleaned[key] = truncate(single_line(value), limit)
    time = cleaned.get("time")
    if isinstance(time, str) and len(time) > _MAX_TIME_TEXT:
        raise PayloadError("invalid_event", "time: not an RFC 3339 timestamp (too long)")
    if cleaned.get("output_fields") is not None and not isinstance(
        cleaned.get("output_fields"), Mapping
    ):
        raise PayloadError("invalid_event", "output_fields: must be an object")


def _select_fields(fields: Mapping[str, Any], limits: Limits) -> list[tuple[str, Any]]:
    """The fields to keep (all, unless there are too many), keys bounded, lists flattened."""
    items = [
        (truncate(single_line(str(k)), limits.max_key_chars), _flatten(v))
        for k, v in fields.items()
    ]
    if len(items) <= limits.max_fields:
        return items
    room = limits.max_fields - 1  # one slot for the marker saying how many were dropped
    essential = [item for item in items if item[0] in _ESSENTIAL_FIELDS][:room]
    chosen = {key for key, _ in essential}
    rest = [item for item in items if item[0] not in chosen][: room - len(essential)]
    kept = essential + rest
    kept.append((TRUNCATED_FIELDS_KEY, f"{len(items) - len(kept)} more output fields dropped"))
    return kept


def _flatten(value: Any) -> Any:
    """A list of scalars becomes Falco's own text form ``(a,b)``; anything else is unchanged."""
    if isinstance(value, list) and all(not isinstance(v, dict | list) for v in value):
        return "(" + ",".join("" if v is None else str(v) for v in value) + ")"
    return value


def _describe(exc: ValidationError) -> str:
    """A readable summary of the first errors that never echoes the (attacker-chosen) input."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:_MAX_ERRORS_SHOWN]:
        location = ".".join(str(part)[:64] for part in error["loc"]) or "event"
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}")
    text = "; ".join(parts)
    if exc.error_count() > _MAX_ERRORS_SHOWN:
        text += f" (and {exc.error_count() - _MAX_ERRORS_SHOWN} more)"
    return text[:_MAX_ERROR_TEXT]

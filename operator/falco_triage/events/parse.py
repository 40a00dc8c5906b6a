"""Request bytes → JSON objects: one event, a JSON array of events, or NDJSON, under limits.

Every check here runs before any event is looked at, and each failure is a
:class:`PayloadError` with a stable ``code`` a client can act on and the HTTP status the
receiver answers with. Nothing is accepted from a request that fails any check.

Two decoders, one meaning. msgspec decodes what senders really send, one object or one array
of objects, and checks its shape in the same pass (in C, validating UTF-8 itself): every event
an object whose values are strings, integers within 64 bits, booleans, null, or one level of
object or array holding those — every real Falco event, two or three levels deep, within any
allowed depth. Whatever it accepts, the standard library's decoder returns alike. Anything else
(invalid input, NDJSON, a byte order mark, lone surrogate escapes, floats, larger integers,
deeper nesting, too many events) goes down the standard path below, which alone decides every
error, so codes and messages never depend on which decoder ran.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from falco_triage.models.alert import MAX_FIELD_VALUE, MAX_FIELDS, MAX_OUTPUT, MAX_TAGS

if TYPE_CHECKING:
    from falco_triage.settings import IngestSettings

_WS = re.compile(r"[ \t\r\n]*")
_WS_CHARS = frozenset(" \t\r\n")
_CONTAINERS = frozenset((dict, list))
# A JSON string escape for a UTF-16 surrogate; json.loads turns an unpaired one into a lone
# surrogate that cannot be encoded as UTF-8 later, so such payloads get one extra pass.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class PayloadError(Exception):
    """A request or event we refuse, with the machine-readable code and the HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one request and one event may hold.

    The defaults match :class:`~falco_triage.settings.IngestSettings`; per-field caps come from
    the FalcoAlert model, which must stay far below the API server's object size limit.
    """

    max_body_bytes: int = 4 * 1024 * 1024
    max_events: int = 10_000
    max_depth: int = 16
    max_output_chars: int = MAX_OUTPUT
    max_field_chars: int = MAX_FIELD_VALUE
    max_fields: int = MAX_FIELDS
    max_tags: int = MAX_TAGS
    max_tag_chars: int = 128
    max_key_chars: int = 128

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> Limits:
        return cls(
            max_body_bytes=settings.max_body_bytes,
            max_events=settings.max_events_per_request,
            max_depth=settings.max_json_depth,
            max_output_chars=settings.max_output_chars,
            max_field_chars=settings.max_field_chars,
        )


# The shape of the fast path (see the module doc). NB: no float: the standard decoder turns
# 1e999 into inf; and no integer past 64 bits, so none reaches the 4,300-digit limit of int().
_Scalar = str | Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)] | bool | None
_Event = dict[str, _Scalar | dict[str, _Scalar] | list[_Scalar]]
_FAST = msgspec.json.Decoder(_Event | list[_Event])
_FAST_DEPTH = 3  # an array of events holding objects or arrays


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def parse_payload(body: bytes, limits: Limits) -> list[dict[str, Any]]:
    """The JSON objects in ``body``: a single object, an array of objects, or NDJSON.

    Raises :class:`PayloadError` for a body over the size limit (413), more events than allowed
    (413), invalid UTF-8, invalid JSON, nesting deeper than allowed, an empty body or an element
    that is not an object (all 400).
    """
    if len(body) > limits.max_body_bytes:
        raise PayloadError(
            "body_too_large",
            f"request body is {len(body)} bytes; the limit is {limits.max_body_bytes}",
            413,
        )
    fast = _parse_fast(body, limits)
    return fast if fast is not None else _parse_standard(body, limits)


def _parse_standard(body: bytes, limits: Limits) -> list[dict[str, Any]]:
    """:func:`parse_payload` with the standard library's decoder: any body, every error."""
    text = _decode(body)
    pos = _WS.match(text).end()  # type: ignore[union-attr]  # matches the empty string
    if pos == len(text):
        raise PayloadError("empty_body", "request body holds no event")
    if text[pos] == "[":
        # Every event is an object, so no more "{" than allowed events proves the count limit
        # holds, and the whole array can be decoded in one call (the usual batch); otherwise
        # decode element by element and stop at the first event over the limit.
        if text.count("{") <= limits.max_events:
            values = _parse_whole_array(text, limits)
        else:
            values = _parse_array(text, pos + 1, limits)
    elif text[pos] == "{":
        values = _parse_object_or_stream(text, pos, limits)
    else:
        raise PayloadError(
            "invalid_json",
            "expected a JSON object, a JSON array of objects, or NDJSON (one object per line)",
        )
    if _SURROGATE_ESCAPE.search(text):
        values = [_replace_lone_surrogates(v) for v in values]
    return values


def _parse_fast(body: bytes, limits: Limits) -> list[dict[str, Any]] | None:
    """The events of a plain single object or array body, decoded by msgspec; None whenever
    the standard path must decide (see the module doc)."""
    if limits.max_depth < _FAST_DEPTH:
        return None
    try:
        # NB: no count of "{" first, as the standard path does: the body is within its size
        # limit, which bounds the work, and the event count is checked after.
        value = _FAST.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):  # ValidationError is a DecodeError
        return None
    values = value if type(value) is list else [value]
    if not values or len(values) > limits.max_events:
        return None
    return values


def _decode(body: bytes) -> str:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(
            "invalid_utf8", f"request body is not valid UTF-8 (bad byte at offset {exc.start})"
        ) from None
    return text[1:] if text.startswith("\ufeff") else text


def _parse_whole_array(text: str, limits: Limits) -> list[dict[str, Any]]:
    try:
        values = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise PayloadError(
            "invalid_json", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise _too_deep(limits, None) from None
    except ValueError as exc:  # NaN/Infinity, or an integer with thousands of digits
        raise PayloadError("invalid_json", f"invalid JSON: {exc}") from None
    if not values:
        raise PayloadError("empty_body", "the JSON array holds no event")
    levels = limits.max_depth - 1
    for index, value in enumerate(values):
        if type(value) is not dict:
            raise PayloadError(
                "not_an_object", f"event {index} is a JSON {type(value).__name__}, not an object"
            )
        if not _shallow(value) and _deeper(value, levels):
            raise _too_deep(limits, index)
    return values  # type: ignore[no-any-return]


def _parse_array(text: str, pos: int, limits: Limits) -> list[dict[str, Any]]:
    values: list[dict[str, Any]] = []
    pos = _skip(text, pos)
    if pos < len(text) and text[pos] == "]":
        raise PayloadError("empty_body", "the JSON array holds no event")
    while True:
        value, pos = _decode_value(text, pos, limits, index=len(values), base_depth=1)
        values.append(value)
        if len(values) > limits.max_events:
            raise _too_many(limits)
        char = text[pos : pos + 1]
        if char in _WS_CHARS:
            pos = _skip(text, pos)
            char = text[pos : pos + 1]
        if char == ",":
            pos = _skip(text, pos + 1)
            continue
        if char == "]":
            break
        raise _syntax(text, pos, "expected ',' or ']' after an array element")
    pos = _skip(text, pos + 1)
    if pos != len(text):
        raise _syntax(text, pos, "unexpected data after the JSON array")
    return values


def _parse_object_or_stream(text: str, pos: int, limits: Limits) -> list[dict[str, Any]]:
    """One object (decoded in one call: what Falco and Falcosidekick send), else NDJSON."""
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data":
            raise PayloadError(
                "invalid_json",
                f"invalid JSON in event 0 at line {exc.lineno} column {exc.colno}: {exc.msg}",
            ) from None
        return _parse_stream(text, pos, limits)
    except RecursionError:
        raise _too_deep(limits, 0) from None
    except ValueError as exc:  # NaN/Infinity, or an integer with thousands of digits
        raise PayloadError("invalid_json", f"invalid JSON in event 0: {exc}") from None
    if not _shallow(value) and _deeper(value, limits.max_depth):
        raise _too_deep(limits, 0)
    return [value]


def _parse_stream(text: str, pos: int, limits: Limits) -> list[dict[str, Any]]:
    """One object, or several separated by whitespace (NDJSON is the newline-separated case)."""
    values: list[dict[str, Any]] = []
    while pos < len(text):
        value, pos = _decode_value(text, pos, limits, index=len(values), base_depth=0)
        values.append(value)
        if len(values) > limits.max_events:
            raise _too_many(limits)
        pos = _skip(text, pos)
    return values


def _decode_value(
    text: str, pos: int, limits: Limits, *, index: int, base_depth: int
) -> tuple[dict[str, Any], int]:
    try:
        value, end = _DECODER.raw_decode(text, pos)
    except json.JSONDecodeError as exc:
        raise PayloadError(
            "invalid_json",
            f"invalid JSON in event {index} at line {exc.lineno} column {exc.colno}: {exc.msg}",
        ) from None
    except RecursionError:
        raise _too_deep(limits, index) from None
    except ValueError as exc:  # NaN/Infinity, or an integer with thousands of digits
        raise PayloadError("invalid_json", f"invalid JSON in event {index}: {exc}") from None
    if type(value) is not dict:
        raise PayloadError(
            "not_an_object", f"event {index} is a JSON {type(value).__name__}, not an object"
        )
    levels = limits.max_depth - base_depth
    # NB: nesting needs brackets; fewer brackets in the text than allowed levels (the usual
    # case: an event has two or three) proves the depth without walking the parsed value.
    if text.count("{", pos, end) + text.count("[", pos, end) > levels and _deeper(value, levels):
        raise _too_deep(limits, index)
    return value, end


def _shallow(event: dict[str, Any]) -> bool:
    """True if nothing below the event's own values is a container (depth at most 2), as in
    every real Falco event; checked mostly in C, far cheaper than :func:`_deeper`."""
    for value in event.values():
        kind = type(value)
        if kind is dict:
            if not _CONTAINERS.isdisjoint(map(type, value.values())):
                return False
        elif kind is list and not _CONTAINERS.isdisjoint(map(type, value)):
            return False
    return True


def _deeper(node: dict[str, Any] | list[Any], levels: int) -> bool:
    """True if ``node`` (one level itself) nests deeper than ``levels``; recursion is bounded
    by ``levels`` (at most 64), never by the input."""
    if levels <= 0:
        return True
    for child in node.values() if isinstance(node, dict) else node:
        kind = type(child)
        if (kind is dict or kind is list) and _deeper(child, levels - 1):
            return True
    return False


def _replace_lone_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_replace_lone_surrogates(k): _replace_lone_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_lone_surrogates(v) for v in value]
    return value


def _skip(text: str, pos: int) -> int:
    return _WS.match(text, pos).end()  # type: ignore[union-attr]  # matches the empty string


def _syntax(text: str, pos: int, message: str) -> PayloadError:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return PayloadError("invalid_json", f"invalid JSON at line {line} column {column}: {message}")


def _too_many(limits: Limits) -> PayloadError:
    return PayloadError(
        "too_many_events",
        f"request holds more than {limits.max_events} events; send smaller batches",
        413,
    )


def _too_deep(limits: Limits, index: int | None) -> PayloadError:
    what = "the request" if index is None else f"event {index}"
    return PayloadError("too_deep", f"{what} nests JSON deeper than {limits.max_depth} levels")

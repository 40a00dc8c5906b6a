"""Recognise repeats of an event already normalized, without normalizing it again.

Falco repeats itself: a crash-looping container, a cron job or a scanner fires the same rule
with the same fields thousands of times, and only ``time``, ``uuid`` (Falcosidekick's) and the
timestamp at the start of ``output`` change. Normalizing (validation, redaction, fingerprint)
costs far more than recognising such a repeat, so the receiver remembers, per distinct content,
the normalized event, its target and fingerprint, and for a repeat only checks the parts that
differ. A hit is exactly as safe as normalizing: everything else is equal to content that was
already validated and redacted.

NB: Python's ``True == 1`` means a field sent once as ``true`` and once as ``1`` counts as the
same content; Falco gives every field one fixed type, so this never mixes real events.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from falco_triage.events.fingerprint import name_for
from falco_triage.events.normalize import TRUNCATION_MARK
from falco_triage.events.target import alert_namespace
from falco_triage.models.alert import Target
from falco_triage.models.event import FalcoEvent

# The timestamp Falco puts before the message: "09:21:07.512345678: " or an RFC 3339 time.
_OUTPUT_TIME = re.compile(r"^[0-9][0-9T:.+\-Z]{0,39}$")
_FRACTION = re.compile(r"(\.\d{6})\d+")
_MAX_UUID = 64


@dataclass(slots=True)
class Known:
    """A normalized event and where it goes; the template for its repeats."""

    event: FalcoEvent
    target: Target
    fingerprint: str
    namespace: str
    output_rest: str | None  # the normalized output after its timestamp, when it had one
    raw_fields: Any = None  # output_fields and tags exactly as received, to compare repeats with
    raw_tags: Any = None
    keys: dict[int, tuple[str, str]] = field(default_factory=dict)

    def name(self, time: datetime, window_seconds: int) -> str:
        return self.key(time, window_seconds)[1]

    def key(self, time: datetime, window_seconds: int) -> tuple[str, str]:
        """(namespace, name) of the FalcoAlert this content counts into at ``time``."""
        window = int(time.timestamp()) // window_seconds
        key = self.keys.get(window)
        if key is None:
            if len(self.keys) > 16:  # NB: events span few windows; keep this tiny
                self.keys.clear()
            name = name_for(self.event.rule, self.fingerprint, time, window_seconds)
            key = self.keys[window] = (self.namespace, name)
        return key

    def repeat(self, time: datetime, uuid: str | None, output_time: str | None) -> FalcoEvent:
        """The normalized form of a repeat (for when it starts a new alert)."""
        update: dict[str, Any] = {"time": time, "uuid": uuid}
        if output_time is not None and self.output_rest is not None:
            update["output"] = f"{output_time}: {self.output_rest}"
        return self.event.model_copy(update=update)


class Repeat(NamedTuple):
    """An event recognised as a repeat of ``known``: only what differs is kept.

    (A NamedTuple, not a dataclass: one is made per event on the hot path.)
    """

    known: Known
    time: datetime
    uuid: str | None
    output_time: str | None
    first: FalcoEvent | None = None  # set when this event was normalized, not recognised

    def event(self) -> FalcoEvent:
        """This event, normalized."""
        return self.first or self.known.repeat(self.time, self.uuid, self.output_time)


# NB: the NamedTuple's own __new__ is a Python function; made once per event, the C one
# costs half as much (every field given, in order).
_new_repeat = tuple.__new__


class RepeatCache:
    """Bounded map from event content (minus time, uuid, output timestamp) to :class:`Known`."""

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._items: dict[tuple[Any, ...], Known] = {}

    def __len__(self) -> int:
        return len(self._items)

    def match(self, raw: Mapping[str, Any]) -> Repeat | None:
        """The :class:`Repeat` for ``raw`` if its content was seen, else None."""
        # NB: the hot path of a batch, run for every event: _content_key inlined.
        get = raw.get
        output = get("output")
        output_time = None
        if type(output) is str:
            head, sep, rest = output.partition(": ")
            if sep and _OUTPUT_TIME.match(head):
                output_time, output = head, rest
        key = (
            output_time is not None,
            get("rule"),
            get("priority"),
            get("source"),
            get("hostname"),
            output,
        )
        try:
            known = self._items.get(key)
        except TypeError:  # a list or object where text belongs: no fast path
            return None
        if known is None or (output_time is not None and known.output_rest is None):
            return None  # unseen, or its output cannot be rebuilt exactly (it was truncated)
        # NB: the key leaves out output_fields and tags (the output text repeats the fields, and
        # hashing them per event costs more than comparing): compare them in full here.
        if get("output_fields") != known.raw_fields or get("tags") != known.raw_tags:
            return None
        time = parse_time(get("time"))
        uuid = get("uuid")
        if time is None or not (uuid is None or (isinstance(uuid, str) and len(uuid) <= _MAX_UUID)):
            return None  # let normalization produce the precise error
        return _new_repeat(Repeat, (known, time, uuid, output_time, None))

    def remember(
        self,
        raw: Mapping[str, Any],
        event: FalcoEvent,
        target: Target,
        fingerprint: str,
        default_namespace: str,
    ) -> Known:
        key, output_time = _content_key(raw)
        rest = None
        if output_time is not None and event.output is not None:
            head = f"{output_time}: "
            # NB: a truncated output cannot take another timestamp and stay within its limit.
            if event.output.startswith(head) and TRUNCATION_MARK not in event.output:
                rest = event.output[len(head) :]
        known = Known(
            event,
            target,
            fingerprint,
            alert_namespace(target, default_namespace),
            rest,
            raw.get("output_fields"),
            raw.get("tags"),
        )
        try:
            hash(key)
        except TypeError:  # unhashable content is never cached
            return known
        if len(self._items) >= self._capacity:
            del self._items[next(iter(self._items))]  # oldest first
        self._items[key] = known
        return known


def parse_time(value: object) -> datetime | None:
    """Falco's RFC 3339 ``time`` exactly as :class:`FalcoEvent` parses it; None if invalid."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    if len(value) == 30 and value[19] == "." and value[29] == "Z":
        text = value[:26] + "+00:00"  # Falco's own form, nanoseconds and Z: skip the regex
    else:
        text = _FRACTION.sub(r"\1", value.strip()).replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_KEY_FIELDS = ("rule", "priority", "source", "hostname", "output")


def _content_key(raw: Mapping[str, Any]) -> tuple[tuple[Any, ...], str | None]:
    """What identifies the event's content, less time, uuid and output timestamp (and less
    output_fields and tags, compared separately); maybe unhashable. (Inlined in
    :meth:`RepeatCache.match`: keep the two alike.)"""
    rule, priority, source, hostname, output = map(raw.get, _KEY_FIELDS)
    output_time = None
    if type(output) is str:
        head, sep, rest = output.partition(": ")
        if sep and _OUTPUT_TIME.match(head):
            output_time, output = head, rest
    return (output_time is not None, rule, priority, source, hostname, output), output_time

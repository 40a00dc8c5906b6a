"""The repeat fast path is exact: a recognised repeat rebuilds to precisely what normalizing it
would give (time, uuid and output timestamp included), anything else that differs is not
recognised, truncated outputs always take the slow path, and the cache stays bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from falco_triage.events.fingerprint import fingerprint
from falco_triage.events.normalize import normalize_event
from falco_triage.events.parse import Limits
from falco_triage.events.repeats import RepeatCache, parse_time
from falco_triage.events.target import resolve_target
from tests.unit.factories import falco_time, make_raw_event

LIMITS = Limits()
NS = "falco-triage"
LATER = datetime(2024, 5, 14, 10, 0, 0, 250000, tzinfo=UTC)


def _learn(cache: RepeatCache, raw: dict[str, object]) -> None:
    event = normalize_event(raw, LIMITS)
    target = resolve_target(event, NS)
    cache.remember(raw, event, target, fingerprint(event, target), NS)


def test_repeat_rebuilds_exactly_what_normalizing_gives() -> None:
    cache = RepeatCache()
    _learn(cache, make_raw_event(sidekick=True, **{"proc.cmdline": "mysql -pSecret1 db"}))
    repeat = make_raw_event(sidekick=True, at=LATER, **{"proc.cmdline": "mysql -pSecret1 db"})
    repeat["uuid"] = "f47ac10b-58cc-4372-a567-0e02b2c3d479"
    hit = cache.match(repeat)
    assert hit is not None
    assert hit.event() == normalize_event(repeat, LIMITS)
    assert hit.known.namespace == "shop"


def test_anything_but_time_uuid_and_output_timestamp_breaks_the_match() -> None:
    cache = RepeatCache()
    _learn(cache, make_raw_event())
    assert cache.match(make_raw_event(at=LATER)) is not None
    assert cache.match(make_raw_event(**{"proc.pid": 4242})) is None
    assert cache.match(make_raw_event(pod="web-other")) is None
    assert cache.match(make_raw_event(priority="Critical")) is None
    assert cache.match(make_raw_event(hostname="worker-9")) is None
    assert cache.match(make_raw_event(tags=["x"])) is None
    assert cache.match(make_raw_event(output="no timestamp here")) is None


def test_output_without_timestamp_is_not_confused_with_one_that_has_it() -> None:
    cache = RepeatCache()
    raw = make_raw_event()
    _learn(cache, raw)
    stripped = dict(raw, output=str(raw["output"]).split(": ", 1)[1])
    assert cache.match(stripped) is None


def test_invalid_time_or_uuid_takes_the_slow_path() -> None:
    cache = RepeatCache()
    _learn(cache, make_raw_event())
    assert cache.match(make_raw_event(time="not a time")) is None
    assert cache.match(make_raw_event(time=12345)) is None
    assert cache.match(make_raw_event(uuid=["not", "a", "string"])) is None
    assert cache.match(make_raw_event(uuid="u" * 65)) is None


def test_truncated_output_always_takes_the_slow_path() -> None:
    cache = RepeatCache()
    limits = Limits(max_output_chars=300)
    long = make_raw_event(**{"proc.cmdline": "x" * 1000})
    event = normalize_event(long, limits)
    target = resolve_target(event, NS)
    cache.remember(long, event, target, fingerprint(event, target), NS)
    assert cache.match(make_raw_event(at=LATER, **{"proc.cmdline": "x" * 1000})) is None


def test_list_values_are_compared_in_full() -> None:
    cache = RepeatCache()
    raw = make_raw_event()
    raw["output_fields"]["list"] = ["a", "b"]
    _learn(cache, raw)
    again = make_raw_event(at=LATER)
    again["output_fields"]["list"] = ["a", "b"]
    hit = cache.match(again)
    assert hit is not None
    assert hit.event() == normalize_event(again, LIMITS)
    again["output_fields"]["list"] = ["a", "c"]
    assert cache.match(again) is None


def test_unhashable_content_is_never_cached() -> None:
    cache = RepeatCache()
    raw = make_raw_event()
    raw["hostname"] = ["not", "text"]  # invalid anyway; must not break the cache
    event = normalize_event(make_raw_event(), LIMITS)
    target = resolve_target(event, NS)
    cache.remember(raw, event, target, fingerprint(event, target), NS)
    assert len(cache) == 0
    assert cache.match(raw) is None


def test_cache_is_bounded_and_forgets_the_oldest() -> None:
    cache = RepeatCache(capacity=3)
    raws = [make_raw_event(pod=f"web-{i}") for i in range(5)]
    for raw in raws:
        _learn(cache, raw)
    assert len(cache) == 3
    assert cache.match(raws[0]) is None
    assert cache.match(raws[4]) is not None


def test_names_follow_the_window_of_each_repeat() -> None:
    cache = RepeatCache()
    _learn(cache, make_raw_event())
    today = cache.match(make_raw_event(at=LATER))
    tomorrow = cache.match(make_raw_event(at=LATER + timedelta(days=1)))
    assert today is not None
    assert tomorrow is not None
    assert today.known.name(today.time, 86400) != tomorrow.known.name(tomorrow.time, 86400)
    assert today.known.name(today.time, 86400) == today.known.name(LATER, 86400)


def test_parse_time_agrees_with_the_model() -> None:
    for text in [falco_time(LATER), "2024-05-14T10:00:00Z", "2024-05-14T10:00:00+02:00"]:
        event = normalize_event(make_raw_event(time=text), LIMITS)
        assert parse_time(text) == event.time
    assert parse_time("2024-05-14T10:00:00") == datetime(2024, 5, 14, 10, tzinfo=UTC)
    assert parse_time("garbage") is None
    assert parse_time(None) is None

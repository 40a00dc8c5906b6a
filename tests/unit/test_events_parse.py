"""Request bodies → JSON objects: the three accepted shapes (one object, an array, NDJSON) and
every rejection path, each with its stable error code and HTTP status, and none echoing or
choking on hostile input."""

from __future__ import annotations

import json
import random
import time

import pytest

from falco_triage.events import parse
from falco_triage.events.parse import Limits, PayloadError, parse_payload
from tests.unit.factories import make_raw_event, sample_files

LIMITS = Limits()


def _body(*events: dict[str, object]) -> bytes:
    return json.dumps(list(events)).encode()


def _reject(body: bytes, limits: Limits = LIMITS) -> PayloadError:
    with pytest.raises(PayloadError) as info:
        parse_payload(body, limits)
    return info.value


def test_single_object() -> None:
    event = make_raw_event()
    assert parse_payload(json.dumps(event).encode(), LIMITS) == [event]


def test_array_of_objects() -> None:
    events = [make_raw_event(), make_raw_event("Read sensitive file untrusted")]
    assert parse_payload(_body(*events), LIMITS) == events


def test_ndjson_with_blank_lines_and_crlf() -> None:
    events = [make_raw_event(), make_raw_event("Attach/Exec Pod")]
    body = ("\r\n".join(json.dumps(e) for e in events) + "\r\n\r\n").encode()
    assert parse_payload(body, LIMITS) == events


def test_pretty_printed_single_object_and_bom() -> None:
    event = make_raw_event()
    body = "\ufeff".encode() + json.dumps(event, indent=2).encode()
    assert parse_payload(body, LIMITS) == [event]


def test_array_with_whitespace_everywhere() -> None:
    body = b' \n[ {"a": 1} ,\n {"b": 2} ]\n '
    assert parse_payload(body, LIMITS) == [{"a": 1}, {"b": 2}]


def test_lone_surrogate_escape_is_replaced_not_fatal() -> None:
    body = b'{"rule": "x\\ud800y"}'
    assert parse_payload(body, LIMITS) == [{"rule": "x\ufffdy"}]


def test_valid_surrogate_pair_is_kept() -> None:
    body = b'{"rule": "\\ud83d\\ude00"}'
    assert parse_payload(body, LIMITS) == [{"rule": "\U0001f600"}]


@pytest.mark.parametrize(
    ("body", "code", "status", "words"),
    [
        (b"", "empty_body", 400, "no event"),
        (b"  \n ", "empty_body", 400, "no event"),
        (b"[]", "empty_body", 400, "no event"),
        (b"\xff\xfe{}", "invalid_utf8", 400, "offset 0"),
        (b'{"rule": "caf\xc3"}', "invalid_utf8", 400, "UTF-8"),
        (b'{"rule": ', "invalid_json", 400, "line 1"),
        (b'{"rule": "x"} garbage', "invalid_json", 400, "event 1"),
        (b'[{"rule": "x"} {"rule": "y"}]', "invalid_json", 400, "','"),
        (b'[{"rule": "x"}] [', "invalid_json", 400, "line 1 column 17"),
        (b'{"n": NaN}', "invalid_json", 400, "NaN"),
        (b'{"n": Infinity}', "invalid_json", 400, "Infinity"),
        (b'{"n": ' + b"9" * 5000 + b"}", "invalid_json", 400, "event 0"),
        (b'"just a string"', "invalid_json", 400, "expected a JSON object"),
        (b"42", "invalid_json", 400, "expected a JSON object"),
        (b"[1, 2]", "not_an_object", 400, "event 0 is a JSON int"),
        (b'[{"a": 1}, "x"]', "not_an_object", 400, "event 1 is a JSON str"),
        (b'{"a": 1}\n[1]', "not_an_object", 400, "event 1 is a JSON list"),
    ],
)
def test_rejections(body: bytes, code: str, status: int, words: str) -> None:
    error = _reject(body)
    assert (error.code, error.status) == (code, status)
    assert words in error.message


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'[{"a": {"x": 1}} {"b": {"y": 2}}]', "expected ',' or ']'"),
        (b'[{"a": {"x": 1}}, {"b": {"y": 2}}] x', "after the JSON array"),
        (b'[{"a": {"x": 1}}, {"b": {"y": }}]', "event 1"),
        (b'[{"a": {"x": 1}}, 7]', "event 1 is a JSON int"),
    ],
)
def test_arrays_with_more_braces_than_events_are_decoded_one_by_one(
    body: bytes, words: str
) -> None:
    # More "{" than max_events: the element-by-element path, which can stop early and name the
    # event; the same rejections as the whole-array path, with more detail.
    error = _reject(body, Limits(max_events=3))
    assert words in error.message


def test_element_by_element_path_accepts_what_the_whole_path_accepts() -> None:
    events = [make_raw_event(pod=f"p{i}") for i in range(5)]
    body = json.dumps(events).encode()
    assert parse_payload(body, Limits(max_events=5)) == parse_payload(body, LIMITS) == events


def test_line_and_column_of_ndjson_error() -> None:
    body = b'{"a": 1}\n{"b": 2}\n{"c": }\n'
    error = _reject(body)
    assert error.code == "invalid_json"
    assert "line 3" in error.message


def test_body_over_the_size_limit_is_413() -> None:
    limits = Limits(max_body_bytes=1024)
    error = _reject(b" " * 1025, limits)
    assert (error.code, error.status) == ("body_too_large", 413)
    assert "1025 bytes" in error.message
    assert "1024" in error.message


@pytest.mark.parametrize("shape", ["array", "ndjson"])
def test_too_many_events_is_413(shape: str) -> None:
    limits = Limits(max_events=5)
    events = [{"i": i} for i in range(6)]
    body = (
        json.dumps(events).encode()
        if shape == "array"
        else "\n".join(json.dumps(e) for e in events).encode()
    )
    error = _reject(body, limits)
    assert (error.code, error.status) == ("too_many_events", 413)
    assert "5 events" in error.message


def test_exactly_the_maximum_is_accepted() -> None:
    limits = Limits(max_events=5)
    assert len(parse_payload(_body(*[{"i": i} for i in range(5)]), limits)) == 5


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": {"b": {"c": {"d": {"e": 1}}}}}',
        b'[{"a": [[[[1]]]]}]',
        b'{"output_fields": {"x": [1, [2, [3]]]}}',
    ],
)
def test_nesting_deeper_than_the_limit(body: bytes) -> None:
    error = _reject(body, Limits(max_depth=4))
    assert (error.code, error.status) == ("too_deep", 400)
    assert "deeper than 4" in error.message


def test_nesting_at_the_limit_is_accepted() -> None:
    assert parse_payload(b'{"a": {"b": {"c": {"d": 1}}}}', Limits(max_depth=4))


def test_pathological_nesting_is_rejected_fast_without_recursion_error() -> None:
    body = b"[" * 200_000 + b"]" * 200_000
    started = time.perf_counter()
    error = _reject(body)
    assert error.code == "too_deep"
    assert time.perf_counter() - started < 2.0


def test_real_falco_events_are_within_the_default_depth() -> None:
    # A Falco event is 2 levels (event, output_fields); in an array, 3. 16 leaves slack.
    body = _body(make_raw_event(), make_raw_event("Create Privileged Pod"))
    assert len(parse_payload(body, LIMITS)) == 2


def test_error_messages_do_not_echo_the_input() -> None:
    secret = "hunter2-very-secret"
    error = _reject(f'{{"password": "{secret}", }}'.encode())
    assert secret not in error.message


def test_as_dict() -> None:
    error = PayloadError("too_deep", "nested", 400)
    assert error.as_dict() == {"code": "too_deep", "message": "nested"}


# --------------------------------------------------------------------------------------------
# The fast decoder (msgspec) answers exactly as the standard one, or leaves the body to it
# --------------------------------------------------------------------------------------------

_TEXTS = ["", "bash", "caf\u00e9", "\u202e", "\x00\x1f", '"quoted"', "\\", "\U0001f600", "x" * 70]
_RAW_VALUES = [
    b"0",
    b"-0",
    b"-0.0",
    b"1.5e3",
    b"1e999",
    b"-1e-999",
    b"9223372036854775807",
    b"9223372036854775808",
    b"18446744073709551615",
    b"18446744073709551616",
    b"-9223372036854775808",
    b"-9223372036854775809",
    b"123456789012345678901234567890",
    b'"\\ud800"',
    b'"\\udc00x"',
    b'"\\ud83d\\ude00"',
    b'"\\u0000\\u001b\\u009b"',
    b'"\xed\xa0\x80"',
    b'"\xc0\xaf"',
    b"NaN",
    b"true",
    b"null",
]


def _random_value(rng: random.Random, depth: int) -> bytes:
    pick = rng.random()
    if depth < 6 and pick < 0.15:
        items = [_random_value(rng, depth + 1) for _ in range(rng.randrange(3))]
        return b"[" + b",".join(items) + b"]"
    if depth < 6 and pick < 0.3:
        items = [
            json.dumps(rng.choice(_TEXTS)).encode() + b":" + _random_value(rng, depth + 1)
            for _ in range(rng.randrange(3))
        ]
        return b"{" + b",".join(items) + b"}"
    if pick < 0.6:
        return json.dumps(rng.choice(_TEXTS), ensure_ascii=rng.random() < 0.5).encode()
    return rng.choice(_RAW_VALUES)


def _random_body(rng: random.Random) -> bytes:
    def event() -> bytes:
        fields = b",".join(
            json.dumps(f"k{i}").encode() + b":" + _random_value(rng, 2)
            for i in range(rng.randrange(4))
        )
        return (
            b'{"rule":"r","output_fields":{' + fields + b'},"tags":' + _random_value(rng, 1) + b"}"
        )

    events = [event() for _ in range(rng.randrange(1, 4))]
    body = rng.choice(
        [
            events[0],
            b"[" + b",".join(events) + b"]",
            b"\n".join(events),
            b" \n" + events[0],
            "\ufeff".encode() + events[0],
            events[0] + b" x",
            b"[]",
        ]
    )
    return body


def _outcome(body: bytes, limits: Limits) -> str:
    try:
        return repr(parse_payload(body, limits))  # repr tells 1 from 1.0 and 0.0 from -0.0
    except PayloadError as exc:
        return f"{exc.status} {exc.code}: {exc.message}"


@pytest.mark.parametrize("seed", range(8))
def test_fast_decoder_answers_as_the_standard_one(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    bodies = [_random_body(rng) for _ in range(300)]
    limits = [LIMITS, Limits(max_depth=4), Limits(max_events=2)]
    fast = [_outcome(body, lim) for body in bodies for lim in limits]
    monkeypatch.setattr(parse, "_parse_fast", lambda body, limits: None)
    standard = [_outcome(body, lim) for body in bodies for lim in limits]
    assert fast == standard
    accepted = sum(not outcome[:1].isdigit() for outcome in fast)
    assert 0.2 < accepted / len(fast) < 0.9  # both sides of the fence were exercised


def test_integers_beyond_64_bits_stay_exact() -> None:
    big = b"123456789012345678901234567890"
    body = b'{"rule": "r", "output_fields": {"n": ' + big + b', "m": -9223372036854775809}}'
    (event,) = parse_payload(body, LIMITS)
    assert event["output_fields"] == {"n": int(big), "m": -9223372036854775809}
    (event,) = parse_payload(b'[{"n": [18446744073709551616]}]', LIMITS)
    assert event == {"n": [2**64]}


def test_real_events_take_the_fast_path() -> None:
    # Not a matter of meaning (the standard path answers alike) but of cost: a Falco or
    # Falcosidekick event, alone or in a batch, must not fall back to the standard decoder.
    bodies = [path.read_bytes() for path in sample_files()]
    batch = b"[" + b",".join(bodies) + b"]"
    for body in bodies:
        assert parse._parse_fast(body, LIMITS) == [json.loads(body)]
    assert parse._parse_fast(batch, LIMITS) == json.loads(batch)

"""Control characters in event text: NUL, BEL, carriage return, DEL, the C1 controls (U+009B,
the 8-bit CSI, among them) and bidi overrides become U+FFFD before anything is stored, as the
report shows them; multi-line values (output, field values) keep tab and newline, one-line
values (rule, hostname, source, uuid, tags, field names, the target's display) do not; secrets
next to control characters are still redacted; and the fingerprint is computed from the
replaced text, so it is the same for every event that stores the same alert."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from falco_triage.events.controls import REPLACEMENT, multiline, single_line
from falco_triage.events.fingerprint import alert_spec
from falco_triage.events.normalize import normalize_event
from falco_triage.events.parse import Limits
from falco_triage.events.target import resolve_target
from falco_triage.report.escape import strip_controls
from tests.unit.factories import make_raw_event

LIMITS = Limits()
HOSTILE = Path(__file__).resolve().parents[1] / "data" / "hostile" / "control-characters.json"
# Every character a terminal may act on: C0, DEL, C1.
CONTROLS = [chr(c) for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)]]
BIDI = [chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]]
FFFD = "\ufffd"


@pytest.mark.parametrize("char", [*CONTROLS, *BIDI], ids=lambda c: f"U+{ord(c):04X}")
def test_single_line_replaces_every_control_character(char: str) -> None:
    assert single_line(f"a{char}b") == f"a{FFFD}b"


@pytest.mark.parametrize("char", [*CONTROLS, *BIDI], ids=lambda c: f"U+{ord(c):04X}")
def test_multiline_keeps_only_tab_and_newline(char: str) -> None:
    expected = f"a{char}b" if char in "\t\n" else f"a{FFFD}b"
    assert multiline(f"a{char}b") == expected


@pytest.mark.parametrize(
    "text", ["", "plain ascii", "Grüße, 東京, emoji 🙂", "a\u00a0b", "zero\u200bwidth"]
)
def test_other_text_is_kept_as_it_is(text: str) -> None:
    assert single_line(text) == text
    assert multiline(text) == text


def test_it_matches_the_report_and_keeps_lengths() -> None:
    text = "".join(CONTROLS + BIDI) + "x\u00e9\u4e2d"
    assert REPLACEMENT == FFFD
    assert multiline(text) == strip_controls(text)
    assert len(single_line(text)) == len(multiline(text)) == len(text)


def test_every_stored_text_of_an_event_is_replaced() -> None:
    raw = make_raw_event(
        "Terminal shell in container",
        namespace="shop",
        pod="web-1",
        hostname="node\x07-1\n",
        output="09:21:07.512345678: Notice shell\x00 in\u009b31m\ttab\nnext\rline\x7f",
        tags=["container\x00", "mitre\texecution"],
        **{"proc.cmdline": "bash\x00-i\n-c\tx", "evil\x1bkey\n": "v\u202e"},
    )
    raw["rule"] = "Terminal shell in container\x00\x07\u009b31m\t\n\r"
    raw["source"] = "syscall"
    raw["uuid"] = "u\x00u"
    event = normalize_event(raw, LIMITS)
    assert event.rule == f"Terminal shell in container{FFFD * 3}31m{FFFD * 3}"
    assert event.hostname == f"node{FFFD}-1{FFFD}"
    assert event.uuid == f"u{FFFD}u"
    assert event.output == (
        f"09:21:07.512345678: Notice shell{FFFD} in{FFFD}31m\ttab\nnext{FFFD}line{FFFD}"
    )
    assert event.output_fields["proc.cmdline"] == f"bash{FFFD}-i\n-c\tx"
    assert event.output_fields[f"evil{FFFD}key{FFFD}"] == f"v{FFFD}"
    assert event.tags == [f"container{FFFD}", f"mitre{FFFD}execution"]


def test_the_target_display_is_one_line() -> None:
    pod = make_raw_event(namespace="shop", pod="web\t1\n\u009b", **{"container.name": "c"})
    display = resolve_target(normalize_event(pod, LIMITS), "ops").display
    assert display == f"shop/web{FFFD}1{FFFD}{FFFD}"
    host = make_raw_event(host=True, hostname="node-1", **{"container.name": "nginx\nx"})
    host["output_fields"]["container.id"] = "3f1c9a2b7d4e"
    display = resolve_target(normalize_event(host, LIMITS), "ops").display
    assert display == f"node-1/nginx{FFFD}x"


def test_secrets_beside_control_characters_are_still_redacted() -> None:
    # \x1c and \x85 are whitespace to the regex engine: redaction runs before the replacement.
    raw = make_raw_event(
        output="mysql\x1c-pS3cretPass ok",
        **{"proc.cmdline": "curl -H 'Authorization:\x85Bearer abcdefgh12345678'"},
    )
    event = normalize_event(raw, LIMITS)
    assert "S3cretPass" not in (event.output or "")
    assert "abcdefgh12345678" not in str(event.output_fields["proc.cmdline"])


def test_the_fingerprint_is_that_of_the_stored_text() -> None:
    sent = make_raw_event(namespace="shop", pod="web-1", **{"proc.name": "ba\x07sh"})
    stored = make_raw_event(namespace="shop", pod="web-1", **{"proc.name": f"ba{FFFD}sh"})
    sent["rule"] = stored["rule"] = "Terminal shell in container"
    sent["rule"] += "\x00"
    stored["rule"] += FFFD
    first = alert_spec(normalize_event(sent, LIMITS), "ops")
    second = alert_spec(normalize_event(stored, LIMITS), "ops")
    assert first.fingerprint == second.fingerprint
    assert first == second


def test_the_hostile_corpus_file_stores_no_control_character() -> None:
    raw = json.loads(HOSTILE.read_text().replace("__NAMESPACE__", "shop"))
    spec = alert_spec(normalize_event(raw, LIMITS), "ops")
    multi = [spec.output or "", *(v or "" for v in spec.output_fields.values())]
    single = [spec.rule, spec.target.display, spec.hostname or "", *spec.tags, *spec.output_fields]
    for text in multi:
        assert not (set(CONTROLS) - {"\t", "\n"}) & set(text), text
    for text in single:
        assert not set(CONTROLS) & set(text), text
    assert FFFD in spec.rule
    assert FFFD in (spec.output or "")

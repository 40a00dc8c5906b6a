"""Normalizing events: every sample payload (real-looking Falco http_output and Falcosidekick
webhook events for 25 public rules) is accepted with its fields intact; priorities are read
case-insensitively; field values may be strings, numbers, booleans or null; long values are
truncated with a visible marker instead of rejected; and invalid events are rejected with a
message naming the field, never echoing its value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from falco_triage.events.normalize import (
    TRUNCATED_FIELDS_KEY,
    load_events,
    normalize_event,
    normalize_events,
    truncate,
)
from falco_triage.events.parse import Limits, PayloadError
from falco_triage.models.priority import Priority
from tests.unit.factories import make_raw_event, rule_facts, sample_files

LIMITS = Limits()
SAMPLES = sample_files()


def test_samples_cover_at_least_fifteen_rules_and_both_senders() -> None:
    rules = {load_events(path.read_bytes())[0].rule for path in SAMPLES}
    assert len(rules) >= 15
    assert {path.parent.name for path in SAMPLES} == {"falco", "falcosidekick"}
    sources = {load_events(path.read_bytes())[0].source for path in SAMPLES}
    assert sources == {"syscall", "k8s_audit"}


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_sample_payload_is_accepted_as_sent(path: Path) -> None:
    raw = json.loads(path.read_bytes())
    (event,) = load_events(path.read_bytes())
    facts = rule_facts()[raw["rule"]]
    assert event.rule == raw["rule"]
    assert event.priority.value == facts["json_priority"]
    assert event.source == facts["source"]
    assert event.tags == raw["tags"]
    assert event.hostname == raw["hostname"]
    assert event.uuid == raw.get("uuid")
    assert event.time.isoformat().startswith(raw["time"][:26])
    assert set(event.output_fields) == set(raw["output_fields"])
    for name, value in raw["output_fields"].items():
        if "[REDACTED]" not in str(event.output_fields[name]):
            assert event.output_fields[name] == value, name


@pytest.mark.parametrize("spelling", ["Critical", "CRITICAL", "critical", " critical ", "CrItIcAl"])
def test_priority_is_case_insensitive(spelling: str) -> None:
    event = normalize_event(make_raw_event(priority=spelling), LIMITS)
    assert event.priority is Priority.CRITICAL


@pytest.mark.parametrize("priority", list(Priority))
def test_all_eight_priorities(priority: Priority) -> None:
    event = normalize_event(make_raw_event(priority=priority.value.upper()), LIMITS)
    assert event.priority is priority


@pytest.mark.parametrize(("alias", "expected"), [("INFO", "Informational"), ("warn", "Warning")])
def test_rule_file_spellings_are_accepted(alias: str, expected: str) -> None:
    assert normalize_event(make_raw_event(priority=alias), LIMITS).priority.value == expected


def test_field_values_keep_their_json_types() -> None:
    raw = make_raw_event(
        **{"proc.tty": 34816, "user.loginuid": -1, "evt.time": 1715678467512345678}
    )
    raw["output_fields"].update({"container.privileged": True, "fd.sip.name": None, "x.f": 1.5})
    event = normalize_event(raw, LIMITS)
    fields = event.output_fields
    assert fields["proc.tty"] == 34816
    assert fields["user.loginuid"] == -1
    assert fields["evt.time"] == 1715678467512345678
    assert fields["container.privileged"] is True
    assert fields["fd.sip.name"] is None
    assert fields["x.f"] == 1.5
    assert event.field("fd.sip.name") is None


def test_numbers_beyond_int64_become_bounded_text() -> None:
    raw = make_raw_event()
    raw["output_fields"]["huge"] = 10**40
    assert normalize_event(raw, LIMITS).output_fields["huge"] == str(10**40)


def test_list_of_scalars_becomes_falco_text_form() -> None:
    raw = make_raw_event("Create Privileged Pod")
    raw["output_fields"]["ka.req.pod.containers.image"] = ["nginx:1.25", "busybox"]
    event = normalize_event(raw, LIMITS)
    assert event.output_fields["ka.req.pod.containers.image"] == "(nginx:1.25,busybox)"


def test_missing_optional_fields_are_fine() -> None:
    event = normalize_event(
        {"rule": "Some rule", "priority": "Notice", "time": "2024-05-14T09:21:07Z"}, LIMITS
    )
    assert (event.source, event.output, event.output_fields, event.tags) == (
        "syscall",
        None,
        {},
        [],
    )


def test_output_fields_null_means_none() -> None:
    raw = make_raw_event()
    raw["output_fields"] = None
    assert normalize_event(raw, LIMITS).output_fields == {}


def test_nanosecond_time_is_kept_to_the_microsecond() -> None:
    event = normalize_event(make_raw_event(time="2024-05-14T09:21:07.123456789Z"), LIMITS)
    assert event.time.isoformat() == "2024-05-14T09:21:07.123456+00:00"


def test_long_output_is_truncated_with_a_marker() -> None:
    limits = Limits(max_output_chars=300)
    event = normalize_event(make_raw_event(output="A" * 5000), limits)
    assert event.output is not None
    assert len(event.output) <= 300
    assert event.output.startswith("A" * 200)
    assert event.output.endswith("chars]")
    assert "…[truncated 47" in event.output


def test_long_field_value_is_truncated_with_a_marker() -> None:
    limits = Limits(max_field_chars=100)
    event = normalize_event(make_raw_event(**{"proc.cmdline": "x" * 10_000}), limits)
    value = event.output_fields["proc.cmdline"]
    assert isinstance(value, str)
    assert len(value) <= 100
    assert "truncated 99" in value  # 10000 - kept, where kept = 100 - len(marker)


def test_long_rule_tags_and_keys_are_bounded() -> None:
    raw = make_raw_event(rule="R" * 2000, tags=[f"tag{i}" + "t" * 500 for i in range(100)])
    raw["output_fields"]["k" * 1000] = "v"
    event = normalize_event(raw, LIMITS)
    assert len(event.rule) <= 512
    assert len(event.tags) == LIMITS.max_tags
    assert all(len(tag) <= LIMITS.max_tag_chars for tag in event.tags)
    assert all(len(key) <= LIMITS.max_key_chars for key in event.output_fields)


def test_too_many_fields_keep_the_essential_ones_and_say_so() -> None:
    raw = make_raw_event()
    for i in range(200):
        raw["output_fields"][f"aaa.extra{i:03}"] = i
    event = normalize_event(raw, LIMITS)
    fields = event.output_fields
    assert len(fields) == LIMITS.max_fields
    assert fields["k8s.ns.name"] == "shop"
    assert fields["proc.name"] == "bash"
    assert (
        fields[TRUNCATED_FIELDS_KEY]
        == f"{200 + len(raw['output_fields']) - 200 - 63} more output fields dropped"
    )


def test_secrets_are_redacted_before_truncation() -> None:
    # The secret starts before the cut and ends after it: no prefix of it may survive.
    limits = Limits(max_field_chars=64)
    cmdline = "x" * 40 + " --password=" + "S" * 100
    event = normalize_event(make_raw_event(**{"proc.cmdline": cmdline}), limits)
    assert "S" not in str(event.output_fields["proc.cmdline"]).replace("…[truncated", "")


def test_huge_values_are_clipped_before_redaction_without_leaking_a_cut_secret() -> None:
    # A long password value shrinks to "[REDACTED]" and slides everything after it towards the
    # start; an AWS key cut in half by the pre-redaction clip must not slide into what is kept.
    limit = 256
    clip_at = 2 * limit + 1024
    head = "password=" + "P" * 1500 + " "
    key = "AKIAIOSFODNN7EXAMPLE"
    value = head + "x" * (clip_at - len(head) - 8) + " " + key + " tail" * 1000
    event = normalize_event(make_raw_event(**{"proc.env": value}), Limits(max_field_chars=limit))
    kept = str(event.output_fields["proc.env"])
    assert len(kept) <= limit
    assert "PPPP" not in kept
    assert "AKIA" not in kept
    assert kept.endswith("chars]")


def test_clipping_keeps_the_marker_count_honest() -> None:
    value = "y" * 100_000
    event = normalize_event(make_raw_event(**{"proc.cmdline": value}), Limits(max_field_chars=100))
    kept = str(event.output_fields["proc.cmdline"])
    shown = kept.index("…")
    assert f"truncated {100_000 - shown} chars" in kept


def test_secrets_in_output_and_fields_are_redacted() -> None:
    event = normalize_event(
        make_raw_event(**{"proc.cmdline": "mysql -uroot -pS3cretPass db"}), LIMITS
    )
    assert "S3cretPass" not in json.dumps(event.model_dump(mode="json"))
    assert event.output_fields["proc.cmdline"] == "mysql -uroot -p[REDACTED] db"


@pytest.mark.parametrize(
    ("change", "location"),
    [
        ({"rule": None}, "rule"),
        ({"rule": ""}, "rule"),
        ({"rule": 42}, "rule"),
        ({"priority": "Urgent"}, "priority: unknown priority"),
        ({"priority": 3}, "priority"),
        ({"time": "yesterday"}, "time"),
        ({"time": "2024-13-45T99:00:00Z"}, "time"),
        ({"time": "9" * 100}, "time"),
        ({"output_fields": "proc.name=bash"}, "output_fields"),
        ({"output_fields": {"proc.name": {"nested": 1}}}, "output_fields"),
        ({"output_fields": {"proc.name": [{"a": 1}]}}, "output_fields"),
        ({"tags": "container"}, "tags"),
        ({"tags": [1, 2]}, "tags"),
        ({"hostname": ["a"]}, "hostname"),
        ({"output": 7}, "output"),
    ],
)
def test_invalid_events_name_the_field(change: dict[str, Any], location: str) -> None:
    raw = make_raw_event()
    for key, value in change.items():
        if value is None:
            raw.pop(key)
        else:
            raw[key] = value
    with pytest.raises(PayloadError) as info:
        normalize_event(raw, LIMITS)
    assert (info.value.code, info.value.status) == ("invalid_event", 400)
    assert location in info.value.message


def test_rejection_message_does_not_echo_the_value() -> None:
    raw = make_raw_event(priority="hunter2-secret-priority" * 3)
    with pytest.raises(PayloadError) as info:
        normalize_event(raw, LIMITS)
    assert len(info.value.message) <= 512
    raw = make_raw_event(time="hunter2-secret")
    with pytest.raises(PayloadError) as info:
        normalize_event(raw, LIMITS)
    assert "hunter2" not in info.value.message or "isoformat" in info.value.message


def test_normalize_events_names_the_index() -> None:
    good, bad = make_raw_event(), make_raw_event(priority="nope")
    with pytest.raises(PayloadError) as info:
        normalize_events([good, good, bad], LIMITS)
    assert info.value.message.startswith("event 2: priority")


def test_load_events_reads_arrays_and_ndjson() -> None:
    events = [make_raw_event(), make_raw_event("Attach/Exec Pod")]
    as_array = load_events(json.dumps(events).encode())
    as_ndjson = load_events("\n".join(json.dumps(e) for e in events).encode())
    assert [e.rule for e in as_array] == [e.rule for e in as_ndjson]
    assert [e.rule for e in as_array] == ["Terminal shell in container", "Attach/Exec Pod"]


@pytest.mark.parametrize(("length", "limit"), [(10, 10), (11, 10), (1000, 64), (10**6, 4096)])
def test_truncate_never_exceeds_the_limit(length: int, limit: int) -> None:
    text = truncate("z" * length, limit)
    assert len(text) <= limit
    assert (text == "z" * length) == (length <= limit)

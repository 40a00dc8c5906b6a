"""The prompt and the answer parser on their own (no server).

Prompt: only allow-listed Falco fields are sent; the data document is valid JSON between
fences whatever the values, bounded in size even when every value is huge and made of
characters that expand when escaped; the instructions carry the schema.
Answer: fenced, prose-wrapped, "thinking" and camelCase replies are understood; unknown keys
are ignored; strings lose control characters and are clipped; wrong shapes are named without
quoting the reply.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from falco_triage.analysis import analyze
from falco_triage.llm.answer import AnswerError, parse_answer
from falco_triage.llm.prompt import (
    ALLOWED_FIELDS,
    ANSWER_SCHEMA,
    MAX_DATA_CHARS,
    build_prompt,
    repair_messages,
)
from falco_triage.models.event import FalcoEvent
from falco_triage.models.narrative import MAX_IDEA, MAX_IDEAS, MAX_SUMMARY, Confidence
from falco_triage.models.text import TRUNCATION_MARKER
from tests.support.fake_llm import VALID_ANSWER
from tests.unit.factories import make_event, make_raw_event


def _document(event: FalcoEvent) -> tuple[str, dict[str, Any]]:
    prompt = build_prompt(analyze(event), event)
    content = prompt.messages[1]["content"]
    assert content.startswith(prompt.open_fence + "\n")
    assert content.endswith("\n" + prompt.close_fence)
    inner = content[len(prompt.open_fence) + 1 : -len(prompt.close_fence) - 1]
    return inner, json.loads(inner)


def test_only_allow_listed_fields_are_sent() -> None:
    event = make_event(
        "Terminal shell in container",
        **{
            "proc.env": "PATH=/bin HOME=/root",
            "evt.buffer": "raw bytes written",
            "ka.req.configmap.obj": '{"data": {"k": "v"}}',
            "custom.field": "anything",
        },
    )
    _, document = _document(event)
    sent = set(document["event"]["output_fields"])
    assert sent <= ALLOWED_FIELDS
    assert {"proc.cmdline", "k8s.pod.name", "container.id"} <= sent
    assert set(document["analysis"]["evidence_fields"]) <= ALLOWED_FIELDS
    inner, _ = _document(event)
    for absent in ("PATH=/bin", "raw bytes written", '\\"k\\"', "anything"):
        assert absent not in inner


def test_a_huge_value_is_clipped_and_the_document_stays_valid() -> None:
    event = make_event("Terminal shell in container", **{"proc.cmdline": "x" * 100_000})
    inner, document = _document(event)
    assert len(inner) <= MAX_DATA_CHARS
    cmdline = document["event"]["output_fields"]["proc.cmdline"]
    assert cmdline.endswith(TRUNCATION_MARKER)


def test_worst_case_escaping_everywhere_stays_bounded() -> None:
    # '<' becomes six characters once escaped; every allow-listed field gets 4096 of them, and
    # so do the analysis's own texts.
    hostile = "<" * 4096
    raw = make_raw_event("Some rule nobody knows", **dict.fromkeys(ALLOWED_FIELDS, hostile))
    raw["tags"] = [f"tag{i}" for i in range(32)]
    event = FalcoEvent.model_validate(raw)
    analysis = analyze(make_event("Terminal shell in container")).model_copy(
        update={"detects": hostile, "impact": hostile, "summary": hostile[:1024]}
    )
    prompt = build_prompt(analysis, event)
    content = prompt.messages[1]["content"]
    inner = content[len(prompt.open_fence) + 1 : -len(prompt.close_fence) - 1]
    assert len(inner) <= MAX_DATA_CHARS
    assert "<" not in inner
    assert json.loads(inner)["analysis"]["rule"] == "Terminal shell in container"


def test_instructions_carry_the_schema_and_no_event_data() -> None:
    event = make_event("Terminal shell in container", **{"proc.cmdline": "bash -i UNIQUE-VALUE"})
    prompt = build_prompt(analyze(event), event)
    system = prompt.messages[0]["content"]
    assert json.dumps(ANSWER_SCHEMA, separators=(",", ":")) in system
    assert prompt.marker in system
    assert "UNIQUE-VALUE" not in system
    assert "Terminal shell" not in system


def test_repair_keeps_roles_alternating_and_bounds_the_echo() -> None:
    event = make_event("Terminal shell in container")
    prompt = build_prompt(analyze(event), event)
    messages = repair_messages(prompt, "z" * 100_000, "summary: Field required")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert len(messages[2]["content"]) <= 4000
    assert "summary: Field required" in messages[3]["content"]
    assert repair_messages(prompt, "", "x")[2]["content"] == "(empty)"


VALID = json.dumps(VALID_ANSWER)


@pytest.mark.parametrize(
    "reply",
    [
        VALID,
        f"```json\n{VALID}\n```",
        f"Here is my analysis:\n{VALID}\nHope this helps!",
        f"<think>The user wants {{json}}. Let me think.</think>\n{VALID}",
        json.dumps({**VALID_ANSWER, "investigationIdeas": VALID_ANSWER["investigation_ideas"]}),
        json.dumps({**VALID_ANSWER, "confidence": " Medium "}),
    ],
    ids=["plain", "fenced", "prose", "thinking", "camel-case", "confidence-case"],
)
def test_answers_in_the_shapes_models_produce_are_understood(reply: str) -> None:
    narrative = parse_answer(reply)
    assert narrative.summary == VALID_ANSWER["summary"]
    assert narrative.confidence is Confidence.MEDIUM


def test_answer_is_cleaned_and_clipped() -> None:
    narrative = parse_answer(
        json.dumps(
            {
                "summary": "line one\nline\x1b[31m two\u202e " + "s" * 5000,
                "hypothesis": "h",
                "investigation_ideas": ["", "  ", "i" * 5000, *["more"] * 20],
                "confidence": "low",
                "priority": "Emergency",
                "actions": ["label kube-system"],
            }
        )
    )
    assert narrative.summary.startswith("line one line[31m two ")
    assert len(narrative.summary) == MAX_SUMMARY
    assert narrative.summary.endswith(TRUNCATION_MARKER)
    assert len(narrative.investigation_ideas) == MAX_IDEAS
    assert len(narrative.investigation_ideas[0]) == MAX_IDEA
    assert "priority" not in narrative.model_dump()


def test_a_single_idea_string_becomes_a_list() -> None:
    narrative = parse_answer(json.dumps({**VALID_ANSWER, "investigation_ideas": "check logs"}))
    assert narrative.investigation_ideas == ["check logs"]


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (None, "the reply was empty"),
        ("   ", "the reply was empty"),
        ("{nope", "the reply is not valid JSON"),
        ("[1, 2]", "the reply is not a JSON object"),
        ("[" * 100_000, "longer than"),
        ("[" * 30_000 + "]" * 30_000, "the reply is not valid JSON"),
        (json.dumps({**VALID_ANSWER, "summary": 42}), "summary: Input should be a valid string"),
        (json.dumps({**VALID_ANSWER, "summary": ""}), "summary: String should have at least"),
        (json.dumps({"summary": "s"}), "hypothesis: Field required"),
        (json.dumps({**VALID_ANSWER, "confidence": "certain"}), "confidence: Input should be"),
    ],
    ids=[
        "none",
        "blank",
        "broken",
        "array",
        "too-long",
        "deep-nesting",
        "wrong-type",
        "empty-summary",
        "missing",
        "bad-enum",
    ],
)
def test_unusable_answers_are_named(reply: str | None, problem: str) -> None:
    with pytest.raises(AnswerError, match=problem) as caught:
        parse_answer(reply)
    assert "certain" not in caught.value.problems  # the reply is never quoted back

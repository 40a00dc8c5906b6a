"""The narrative section of the report: its own heading saying "model-generated, unverified", a
label on what it can and cannot do, summary, hypothesis and ideas as escaped plain text (never
code blocks), rendered by the report's own jinja2 environment; a status without a narrative
shows why; a disabled feature shows nothing; the section is capped."""

from __future__ import annotations

from datetime import UTC, datetime

from markdown_it import MarkdownIt

from falco_triage.models.narrative import Narrative, NarrativeOutcome, NarrativeStatus
from falco_triage.report.narrative import HEADING, render_narrative
from falco_triage.report.render import TRUNCATED_NOTE, environment

AT = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def _status(**changes: object) -> NarrativeStatus:
    status = NarrativeStatus(
        backend="ollama",
        model="llama3.1:8b",
        prompt_version="1",
        latency_ms=1234,
        outcome=NarrativeOutcome.OK,
        narrative=Narrative(
            summary="Someone opened a shell in web-0 with kubectl exec.",
            hypothesis="An engineer debugging; confirm with the audit log.",
            investigation_ideas=["Check `kubectl auth can-i` for the user", "Look for *new* files"],
            confidence="medium",
        ),
        generated_at=AT,
    )
    return status.model_copy(update=changes)


def test_section_reads_as_labelled_unverified_text() -> None:
    assert render_narrative(_status()) == (
        f"{HEADING}\n"
        "\n"
        "> Written by a language model (llama3.1:8b via ollama) from the analysis above. It may "
        "be wrong. It changes no fact, severity, MITRE ATT&CK mapping or response decision, "
        "and nothing in it is run. Confidence the model states: medium.\n"
        "\n"
        "**Summary:** Someone opened a shell in web-0 with kubectl exec.\n"
        "\n"
        "**Attack hypothesis:** An engineer debugging; confirm with the audit log.\n"
        "\n"
        "**Further ideas to check** (suggestions, not verified commands; the verified ones are "
        "under Investigate):\n"
        "\n"
        "- Check \\`kubectl auth can-i\\` for the user\n"
        "- Look for \\*new\\* files\n"
    )


def test_ideas_are_list_items_never_code() -> None:
    tokens = MarkdownIt("commonmark").parse(render_narrative(_status()))
    assert not [t for t in tokens if t.type in {"fence", "code_block"}]
    inline = [c for t in tokens if t.children for c in t.children]
    assert not [c for c in inline if c.type == "code_inline"]
    assert sum(t.type == "list_item_open" for t in tokens) == 2


def test_cached_answers_say_so() -> None:
    assert "via ollama, cached)" in render_narrative(_status(cache_hit=True))


def test_no_narrative_shows_why() -> None:
    status = _status(
        outcome=NarrativeOutcome.FALLBACK,
        narrative=None,
        reason="invalid_answer: summary: Field required",
    )
    assert render_narrative(status) == (
        f"{HEADING}\n\n_No model-generated narrative: invalid\\_answer: summary: Field required_\n"
    )


def test_disabled_renders_nothing() -> None:
    assert render_narrative(_status(outcome=NarrativeOutcome.DISABLED, narrative=None)) == ""


def test_section_is_capped() -> None:
    text = render_narrative(_status(), limit=400)
    assert len(text.encode("utf-8")) <= 400
    assert text.endswith(TRUNCATED_NOTE)


def test_the_report_environment_is_shared_not_copied() -> None:
    assert environment() is environment()
    assert environment().get_template("narrative.md.j2").environment is environment()

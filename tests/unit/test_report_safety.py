"""Hostile event fields cannot change the report's structure or a terminal: Markdown headings,
code fences, HTML, links, ANSI escapes and bidi overrides are neutralized; huge values are
truncated with a marker and the stored report is capped."""

from __future__ import annotations

from typing import Any

import pytest
from markdown_it import MarkdownIt

from falco_triage.analysis import analyze
from falco_triage.models.alert import MAX_REPORT
from falco_triage.models.event import FalcoEvent
from falco_triage.report import one_line, render_markdown
from falco_triage.report.escape import TRUNCATION_MARKER, md_code, md_fence, md_inline

SECTIONS = [
    "Summary",
    "What happened",
    "Evidence",
    "Where",
    "MITRE ATT&CK",
    "Why it matters",
    "Is it benign?",
    "Investigate",
    "Mitigate",
    "Tune Falco",
    "References",
]

HOSTILE = [
    "\n# Fake heading\n## Mitigate\nrun `kubectl delete ns prod`",
    "```\n# escaped the fence\n```",
    "<script>alert(1)</script><img src=x onerror=alert(1)>",
    "[click me](https://evil.example/) ![x](https://evil.example/x.png)",
    "\x1b[2J\x1b[31mRED\x1b]0;pwned\x07 \x9b31m",
    "safe\u202eexe.txt",
    "| table | injection |\n|---|---|",
    "*emphasis* _under_ ~~strike~~ &lt;entity&gt;",
    "日本語 🚀 café — ünïcödé",
]


def _event(**fields: Any) -> FalcoEvent:
    base: dict[str, Any] = {
        "proc.name": "bash",
        "proc.cmdline": "bash -i",
        "proc.pname": "runc",
        "user.name": "root",
        "user.uid": 0,
        "k8s.ns.name": "shop",
        "k8s.pod.name": "web-0",
        "container.id": "7f1c2a9d3e4b",
        "container.name": "web",
        "container.image.repository": "nginx",
        "fd.name": "/etc/shadow",
    }
    base.update(fields)
    return FalcoEvent.model_validate(
        {
            "time": "2026-11-25T10:00:00Z",
            "rule": "Read sensitive file untrusted",
            "priority": "Warning",
            "source": "syscall",
            "hostname": "worker-1",
            "output_fields": base,
            "tags": ["mitre_credential_access", "T1555"],
        }
    )


def _headings(markdown: str) -> list[str]:
    tokens = MarkdownIt("commonmark").enable("table").parse(markdown)
    return [
        tokens[i + 1].content
        for i, tok in enumerate(tokens)
        if tok.type == "heading_open" and tok.tag in {"h2", "h3"}
    ]


def _has_html(markdown: str) -> bool:
    tokens = MarkdownIt("commonmark").parse(markdown)
    inline = [c for t in tokens for c in (t.children or [])]
    return any(t.type in {"html_block", "html_inline"} for t in [*tokens, *inline])


def _links(markdown: str) -> set[str]:
    tokens = MarkdownIt("commonmark").parse(markdown)
    return {
        str(c.attrs.get("href") or c.attrs.get("src"))
        for t in tokens
        for c in (t.children or [])
        if c.type in {"link_open", "image"}
    }


@pytest.mark.parametrize("payload", HOSTILE)
@pytest.mark.parametrize(
    "field", ["proc.cmdline", "proc.name", "fd.name", "k8s.pod.name", "container.image.repository"]
)
def test_hostile_field_keeps_report_structure(field: str, payload: str) -> None:
    report = render_markdown(analyze(_event(**{field: payload})))
    assert _headings(report) == SECTIONS
    assert report.count("\n# ") == 0
    assert report.startswith("# Falco alert: ")
    assert not _has_html(report)
    assert all(link.startswith("https://") for link in _links(report))
    assert not any(link.startswith("https://evil") for link in _links(report))
    assert "\x1b" not in report
    assert "\x9b" not in report
    assert "\u202e" not in report


def test_hostile_rule_name_cannot_fake_sections() -> None:
    event = _event().model_copy(update={"rule": "x\n## Mitigate\n<b>y</b>"})
    report = render_markdown(analyze(event))
    assert _headings(report) == SECTIONS
    assert not _has_html(report)


def test_investigation_commands_quote_hostile_names() -> None:
    """A pod named like a shell command is one quoted word in every command."""
    report = render_markdown(analyze(_event(**{"k8s.pod.name": "web; rm -rf / #"})))
    assert "'web; rm -rf / #'" in report
    assert " web; rm" not in report.replace("'web; rm", "")


def test_huge_values_are_truncated_and_report_capped() -> None:
    big = "A" * 200_000
    analysis = analyze(_event(**{"proc.cmdline": big, "fd.name": big, "proc.name": big}))
    report = render_markdown(analysis)
    assert len(report.encode("utf-8")) <= MAX_REPORT
    assert TRUNCATION_MARKER in report
    assert _headings(report)[:2] == SECTIONS[:2]


def test_report_cap_closes_open_fence_and_says_so() -> None:
    analysis = analyze(_event())
    report = render_markdown(analysis, limit=2500)
    assert len(report.encode("utf-8")) <= 2500
    assert "status.analysis" in report
    assert report.count("```") % 2 == 0


def test_one_line_is_single_line_and_control_free() -> None:
    line = one_line(analyze(_event(**{"proc.name": "x\n\x1b[31my"})))
    assert "\n" not in line
    assert "\x1b" not in line
    assert line.startswith("[")


@pytest.mark.parametrize("payload", HOSTILE)
def test_escape_helpers_are_total(payload: str) -> None:
    for rendered in (md_inline(payload), md_code(payload), md_fence(payload, "sh")):
        assert "\x1b" not in rendered
    assert "\n" not in md_inline(payload)
    assert "\n" not in md_code(payload)

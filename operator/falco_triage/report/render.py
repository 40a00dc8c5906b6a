"""Rendering an Analysis: the Markdown report, a one-line summary, a terminal view."""

from __future__ import annotations

import re
from functools import cache

import jinja2

from falco_triage.models.alert import MAX_REPORT
from falco_triage.models.analysis import Analysis
from falco_triage.report.escape import (
    Trusted,
    finalize,
    md_code,
    md_fence,
    md_inline,
    strip_controls,
)

_URL = re.compile(r"^https://[A-Za-z0-9._~:/?#@!$&'()*+,;=%-]+$")
TRUNCATED_NOTE = (
    "\n\n---\n_Report truncated to fit the status size limit; the full structure is in "
    "`status.analysis`._\n"
)


def _kb(value: object) -> Trusted:
    """Prose from our own knowledge-base files: Markdown kept, control characters removed."""
    return Trusted(strip_controls(str(value)))


def _url(value: object) -> Trusted:
    text = str(value)
    if not _URL.match(text):
        return md_inline(text)
    return Trusted(text.replace(")", "%29").replace(">", "%3E"))


def _code(value: object) -> Trusted:
    return Trusted("unknown") if value is None else md_code(value)


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("falco_triage.report", "templates"),
        # NB: Markdown, not HTML: escaping is done by ``finalize`` instead of HTML autoescape.
        autoescape=False,  # noqa: S701
        finalize=finalize,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
        keep_trailing_newline=True,
    )
    env.filters.update(code=_code, fence=md_fence, kb=_kb, url=_url)
    return env


def environment() -> jinja2.Environment:
    """The report's jinja2 environment: its ``finalize`` escapes every value not marked safe.

    Other sections (the model-generated narrative) render with it so they get exactly the
    report's escaping and filters.
    """
    return _environment()


def render_markdown(analysis: Analysis, limit: int = MAX_REPORT) -> str:
    """The full report; capped at ``limit`` bytes on a line boundary with a visible note."""
    text = _environment().get_template("report.md.j2").render(a=analysis)
    text = re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
    return cap(text, limit)


def cap(text: str, limit: int) -> str:
    if len(text.encode("utf-8")) <= limit:
        return text
    budget = limit - len(TRUNCATED_NOTE.encode("utf-8"))
    head = text.encode("utf-8")[:budget].decode("utf-8", errors="ignore")
    head = head[: head.rfind("\n")] if "\n" in head else head
    # An unclosed code fence would swallow the note; close it.
    if (fence := _open_fence(head)) is not None:
        head += "\n" + fence
    return head + TRUNCATED_NOTE


_FENCE = re.compile(r"^( {0,3})(`{3,})")


def _open_fence(markdown: str) -> str | None:
    """The closing line for a code fence left open at the end of ``markdown``, if any."""
    open_fence: str | None = None
    for line in markdown.split("\n"):
        match = _FENCE.match(line)
        if match is None:
            continue
        indent, ticks = match.groups()
        if open_fence is None:
            open_fence = indent + ticks
        elif (
            line.strip()
            and set(line.strip()) == {"`"}
            and len(line.strip()) >= len(open_fence.strip())
        ):
            open_fence = None
    return open_fence


def one_line(analysis: Analysis) -> str:
    """``[High] Terminal shell in container: bash as root in pod default/web (nginx)``."""
    text = " ".join(strip_controls(analysis.summary).split())
    return f"[{analysis.severity.level}] {text}"

"""Reports rendered from an Analysis with jinja2: Markdown, one line, terminal. Pure."""

from falco_triage.report.render import one_line, render_markdown

__all__ = ["one_line", "render_markdown"]

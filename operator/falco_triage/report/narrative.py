"""Rendering a :class:`NarrativeStatus`: the clearly labelled, unverified section.

Rendered with the report's own jinja2 environment, so model text is escaped exactly like
hostile event text: one line per value, Markdown/HTML metacharacters escaped, ANSI and bidi
controls removed, clipped. The section is capped as a whole. Suggested checks are plain list
items; they never join the verified investigation commands of the report.
"""

from __future__ import annotations

import re

from falco_triage.models.narrative import NarrativeOutcome, NarrativeStatus
from falco_triage.report.render import cap, environment

HEADING = "## Model-generated narrative (unverified)"
# Holds the largest valid narrative with every character escaped, well under the report's cap.
MAX_NARRATIVE = 8 * 1024


def render_narrative(status: NarrativeStatus, limit: int = MAX_NARRATIVE) -> str:
    """The narrative section in Markdown; empty when the feature is disabled."""
    if status.outcome is NarrativeOutcome.DISABLED:
        return ""
    text = environment().get_template("narrative.md.j2").render(s=status, n=status.narrative)
    text = re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
    return cap(text, limit)

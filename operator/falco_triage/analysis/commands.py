"""Investigation commands with the real names filled in, shell-quoted.

A placeholder the event cannot fill stays visible as ``<name>`` so nobody runs a command with a
guessed value. Values come from attacker-influenced fields, so each one is passed through
``shlex.quote``: a pod named ``x; rm -rf /`` prints as one quoted word.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable

from falco_triage.analysis.knowledge import PLACEHOLDERS

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
# A value longer than this is no useful command argument (and could push the command past its
# bound): it is shown as a placeholder to fill in, like a missing one.
MAX_ARGUMENT = 256


def fill(template: str, lookup: Callable[[str], str | None]) -> tuple[str, list[str]]:
    """The command with every placeholder replaced, and the names left to fill in by hand."""
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        field = PLACEHOLDERS.get(name)
        value = lookup(field) if field else None
        if value is None or len(value) > MAX_ARGUMENT:
            missing.append(name)
            return f"<{name}>"
        return shlex.quote(value)

    return _PLACEHOLDER.sub(replace, template), missing

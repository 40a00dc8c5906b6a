"""Making attacker-controlled text safe to show in Markdown and on terminals.

Everything from the event is hostile until escaped: a command line may contain ``# Fake
heading``, a closing code fence, HTML, or ANSI escape sequences that rewrite a terminal. The
report template escapes every value by default; these helpers are the only way to opt in to
another form (inline code, fenced block), and each one is safe for any input.
"""

from __future__ import annotations

import re

from falco_triage.models.text import TRUNCATION_MARKER, clip

__all__ = ["TRUNCATION_MARKER", "Trusted", "clip", "finalize", "md_code", "md_fence", "md_inline"]

# C0 controls except tab/newline, DEL, C1 controls (incl. the 8-bit CSI), and bidi overrides
# that can make text read differently from what it is.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# Inline values sit mid-line after a label, so only characters that act anywhere in a line
# need escaping: emphasis, code, links/images, raw HTML and entities, tables, strikethrough.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~#&])")
_BACKTICKS = re.compile(r"`+")


class Trusted(str):
    """Text already made safe for the Markdown report; the template prints it as is."""

    __slots__ = ()


def strip_controls(text: str) -> str:
    """Remove control characters (ANSI escapes lose their ESC and become inert text)."""
    return _CONTROL.sub("\N{REPLACEMENT CHARACTER}", text)


def md_inline(value: object, limit: int = 1024) -> Trusted:
    """Plain inline text: one line, every Markdown/HTML metacharacter backslash-escaped."""
    text = " ".join(strip_controls(str(value)).split())
    return Trusted(_MD_SPECIAL.sub(r"\\\1", clip(text, limit)))


def md_code(value: object, limit: int = 1024) -> Trusted:
    """Inline code span that no backtick run inside the value can close early."""
    text = " ".join(strip_controls(str(value)).split())
    text = clip(text, limit)
    longest = max((len(m) for m in _BACKTICKS.findall(text)), default=0)
    fence = "`" * (longest + 1)
    # CommonMark strips one space on each side, so padding is only added where it is needed.
    pad = " " if not text or text[0] in "` " or text[-1] in "` " else ""
    return Trusted(f"{fence}{pad}{text}{pad}{fence}")


def md_fence(value: object, lang: str = "", indent: int = 0, limit: int = 8192) -> Trusted:
    """A fenced code block longer than any backtick run in the value (CommonMark rule)."""
    text = clip(strip_controls(str(value)), limit).rstrip("\n")
    longest = max((len(m) for m in _BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    lines = [f"{fence}{lang}", *text.split("\n"), fence]
    pad = " " * indent
    return Trusted("\n".join(pad + line if line else line for line in lines))


def finalize(value: object) -> object:
    """Jinja finalize hook: anything not explicitly Trusted is escaped as inline text."""
    if value is None:
        return Trusted("unknown")
    if isinstance(value, Trusted):
        return value
    if isinstance(value, bool | int | float):
        return Trusted(str(value))
    return md_inline(value)

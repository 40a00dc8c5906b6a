"""Control characters out of event text before it is stored.

Falco copies whatever a process chose into its output: a rule name, a file name or a command
line can hold NUL, BEL, backspace, carriage return, DEL, the C1 controls (U+0080 to U+009F, among
them U+009B, the 8-bit CSI that starts a terminal escape sequence) or bidirectional overrides.
Stored as sent, they reach terminals through ``kubectl get falcoalerts`` (kubectl escapes only
ESC) and through anything else that prints the object.

Each one becomes U+FFFD (the replacement character), the same substitution the report makes
(:func:`falco_triage.report.escape.strip_controls`), so a stored value and its report read
alike, and the lone surrogates the parser replaces look the same too. U+FFFD rather than a
visible escape such as ``\\x07``: one character for one keeps every length (truncation limits,
positions) unchanged, and a literal ``\\x07`` typed by the sender cannot be told apart from an
escaped BEL.

- :func:`multiline` (``output``, output field values): keeps tab and newline, which command
  lines and Kubernetes request bodies legitimately hold.
- :func:`single_line` (rule, hostname, source, uuid, tags, field names, target display):
  replaces tab, newline and carriage return too, so one value stays one table cell.
"""

from __future__ import annotations

import re

REPLACEMENT = "\N{REPLACEMENT CHARACTER}"

# C0 controls except tab and newline, DEL, C1 controls, bidi embeddings/overrides/isolates.
_MULTILINE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_SINGLE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# The ASCII members of each class, for the fast check below.
_ASCII_MULTILINE = bytes([*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F])
_ASCII_SINGLE_LINE = bytes([*range(0x00, 0x20), 0x7F])


def multiline(text: str) -> str:
    """``text`` with every control character except tab and newline replaced by U+FFFD."""
    if _ascii_without(text, _ASCII_MULTILINE):
        return text
    return _MULTILINE.sub(REPLACEMENT, text)


def single_line(text: str) -> str:
    """``text`` with every control character, tab and newline included, replaced by U+FFFD."""
    if _ascii_without(text, _ASCII_SINGLE_LINE):
        return text
    return _SINGLE_LINE.sub(REPLACEMENT, text)


def _ascii_without(text: str, controls: bytes) -> bool:
    """True if ``text`` is ASCII and holds none of ``controls`` (the usual case).

    NB: a regex scan costs ~10 ns a character, ``bytes.translate`` deleting a few byte values
    about one: this keeps a clean 8 KiB output from costing more than its redaction.
    """
    if not text.isascii():
        return False
    raw = text.encode("ascii")
    return len(raw.translate(None, controls)) == len(raw)

"""From the model's reply text to a validated :class:`Narrative`, or a reason it is not one.

The reply is untrusted text. It is parsed as JSON (also when wrapped in a code fence or in
prose, which plain-prompted models do), only the four known keys are read (anything else, such
as a "priority" or "actions" key, is ignored), every string has control characters removed and
whitespace collapsed, and is clipped to its bound before pydantic validates it. Clipping rather
than rejecting keeps a verbose but sound answer; the bounds keep the stored status small.

NB: control characters are removed here, not only when rendering: ``kubectl describe`` and
``-o yaml`` print the stored status to terminals without our renderer in between.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from falco_triage.models.narrative import (
    MAX_HYPOTHESIS,
    MAX_IDEA,
    MAX_IDEAS,
    MAX_SUMMARY,
    Narrative,
)
from falco_triage.models.text import clip

MAX_ANSWER_CHARS = 64 * 1024  # ten times the largest valid answer; beyond that it is not one
_MAX_PROBLEMS = 4

# C0/C1 controls (ANSI escapes lose their ESC), zero-width and bidi formatting characters.
_INVISIBLE = re.compile(
    r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]"
)
_FENCED = re.compile(r"```[A-Za-z]*\s*\n(.*?)\n\s*```", re.DOTALL)
# Reasoning models (served by Ollama or vLLM) may think aloud before answering.
_THINKING = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


class AnswerError(ValueError):
    """The reply is not a usable answer; ``problems`` names fields and error kinds only."""

    def __init__(self, problems: str) -> None:
        super().__init__(problems)
        self.problems = problems


def parse_answer(text: str | None) -> Narrative:
    """The narrative in ``text``; :class:`AnswerError` saying what is wrong otherwise."""
    if text is None or not text.strip():
        raise AnswerError("the reply was empty")
    if len(text) > MAX_ANSWER_CHARS:
        raise AnswerError(f"the reply was longer than {MAX_ANSWER_CHARS} characters")
    found = _json_object(text)
    if not isinstance(found, dict):
        raise AnswerError("the reply is not a JSON object")
    try:
        return Narrative.model_validate(_bounded(found))
    except ValidationError as exc:
        raise AnswerError(_describe(exc)) from None


def plain(value: str, limit: int) -> str:
    """One line of visible text, at most ``limit`` characters."""
    return clip(" ".join(_INVISIBLE.sub("", value).split()), limit)


def _json_object(text: str) -> Any:
    text = _THINKING.sub("", text).strip()
    candidates = [text]
    if fenced := _FENCED.search(text):
        candidates.append(fenced.group(1))
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except (ValueError, RecursionError):
            continue
    raise AnswerError("the reply is not valid JSON")


def _bounded(found: dict[str, Any]) -> dict[str, Any]:
    """The known keys, strings cleaned and clipped; wrong types are left for pydantic to name."""

    def pick(*names: str) -> Any:
        return next((found[n] for n in names if n in found), None)

    summary, hypothesis = pick("summary"), pick("hypothesis")
    ideas = pick("investigation_ideas", "investigationIdeas")
    confidence = pick("confidence")
    if isinstance(ideas, str):
        ideas = [ideas]
    if isinstance(ideas, list):
        ideas = [plain(i, MAX_IDEA) if isinstance(i, str) else i for i in ideas]
        ideas = [i for i in ideas if i != ""][:MAX_IDEAS]
    data: dict[str, Any] = {
        "summary": plain(summary, MAX_SUMMARY) if isinstance(summary, str) else summary,
        "hypothesis": plain(hypothesis, MAX_HYPOTHESIS)
        if isinstance(hypothesis, str)
        else hypothesis,
        "investigation_ideas": ideas,
        "confidence": confidence.strip().lower() if isinstance(confidence, str) else confidence,
    }
    # Absent keys stay absent so pydantic reports "Field required" rather than a type error.
    return {key: value for key, value in data.items() if value is not None}


def _describe(exc: ValidationError) -> str:
    # NB: only locations and pydantic's messages, never ``input``: the reply may quote the
    # attacker's data, and this text goes back to the model and into the status.
    parts = [
        f"{'.'.join(str(p) for p in err['loc']) or 'answer'}: {err['msg']}"
        for err in exc.errors(include_url=False, include_input=False)[:_MAX_PROBLEMS]
    ]
    return "; ".join(parts)

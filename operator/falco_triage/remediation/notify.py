"""Notification texts: a Kubernetes Event on the alert and a Slack-compatible webhook body.

Only *verified* fields go in: the rule, priority and target the event named (checked and
bounded at ingest), the alert's own name, and the decision (policy, mode, actions). Never the
``output`` line, output fields or anything a model wrote: those carry attacker-chosen text
(command lines, file names) that has no business in a chat channel.

Every value is put in a code span and escaped for Slack mrkdwn: ``&``, ``<`` and ``>`` become
entities (so no ``<!channel>`` mention or ``<http://…|link>`` can be formed), backticks
become ``'`` (so no value can leave its code span and its formatting), line breaks become
spaces, and each value is clipped.
"""

from __future__ import annotations

from typing import Any

from falco_triage.models.alert import Decision, FalcoAlertSpec
from falco_triage.models.text import clip

EVENT_REASON = "PolicyNotify"
_MAX_VALUE = 200  # per value: enough for any rule or pod name, short enough to read
_MAX_EVENT_MESSAGE = 1024  # Kubernetes truncates Event messages; stay well under


def slack_escape(text: str) -> str:
    """Text safe to place inside a Slack mrkdwn code span."""
    flat = " ".join(text.split())
    escaped = flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return clip(escaped.replace("`", "'"), _MAX_VALUE)


def build_notification(
    alert_name: str, namespace: str, spec: FalcoAlertSpec, decision: Decision
) -> dict[str, Any]:
    """``{"text": …}``, the body every Slack-compatible incoming webhook accepts."""

    def code(value: str) -> str:
        return f"`{slack_escape(value)}`"

    target = spec.target
    where = [f"{target.kind.value.lower()} {code(target.display)}"]
    for label, value in (
        ("container", target.container_name),
        ("image", target.image),
        ("node", target.node),
    ):
        if value:
            where.append(f"{label} {code(value)}")
    lines = [
        f":rotating_light: *Falco alert* {code(spec.priority.value)} {code(spec.rule)}",
        "*Where:* " + ", ".join(where),
    ]
    if decision.policy:
        mode = decision.mode.value if decision.mode else "?"
        actions = ", ".join(code(a) for a in decision.actions) or "none"
        lines.append(f"*Policy:* {code(decision.policy)} ({code(mode)}), actions: {actions}")
    lines.append(f"*Details:* {code(f'kubectl -n {namespace} describe falcoalert {alert_name}')}")
    return {"text": "\n".join(lines)}


def build_event(spec: FalcoAlertSpec, decision: Decision) -> dict[str, Any]:
    """The Kubernetes Event recorded on the FalcoAlert by ``notify`` (type, reason, message)."""
    mode = decision.mode.value if decision.mode else "?"
    message = (
        f"{spec.priority.value} alert {spec.rule!r} on {spec.target.display}: "
        f"policy {decision.policy} ({mode}) responds with {', '.join(decision.actions)}"
    )
    return {"type": "Warning", "reason": EVENT_REASON, "message": clip(message, _MAX_EVENT_MESSAGE)}

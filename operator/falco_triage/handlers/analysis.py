"""Analyze each FalcoAlert once per knowledge-base version, or again on request.

Thin on purpose: parse the resource, call ``analyze`` and ``render_markdown``, write one status
patch, post one Event. Triggers: creation, operator start (``resume``: picks up alerts analyzed
by an older knowledge base) and a change of the ``falcotriage.io/reanalyze`` annotation.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from falco_triage.analysis import AnalysisContext, analyze
from falco_triage.analysis.knowledge import load_knowledge_base
from falco_triage.handlers.state import current_settings, namespace_labels
from falco_triage.models.alert import FalcoAlertSpec, Phase
from falco_triage.models.common import GROUP, VERSION, Condition, ConditionStatus, now
from falco_triage.models.event import FalcoEvent
from falco_triage.report import one_line, render_markdown

REANALYZE_ANNOTATION = f"{GROUP}/reanalyze"


def event_from_spec(spec: FalcoAlertSpec) -> FalcoEvent:
    """The stored (bounded, redacted) event, back in the shape ``analyze`` reads."""
    return FalcoEvent(
        time=spec.time,
        rule=spec.rule,
        priority=spec.priority,
        source=spec.source,
        hostname=spec.hostname,
        output=spec.output,
        output_fields=dict(spec.output_fields),
        tags=list(spec.tags),
        uuid=spec.uuid,
    )


def needs_analysis(status: dict[str, Any], kb_version: str) -> bool:
    analysis = status.get("analysis") or {}
    return analysis.get("kbVersion") != kb_version


Logger = logging.Logger | logging.LoggerAdapter[Any]


def analyze_body(body: kopf.Body, patch: kopf.Patch, logger: Logger, reason: str) -> None:
    """Analyze the alert and stage the status patch and Event."""
    spec = FalcoAlertSpec.model_validate(dict(body.spec))
    settings = current_settings()
    context = AnalysisContext(
        namespace_labels=namespace_labels(body.metadata.namespace),
        production_label=settings.operator.production_label,
    )
    analysis = analyze(event_from_spec(spec), context)
    report = render_markdown(analysis)
    status = dict(body.status)
    phase = status.get("phase") or Phase.RECEIVED.value
    if phase == Phase.RECEIVED.value:
        patch.status["phase"] = Phase.ANALYZED.value
    patch.status["analysis"] = analysis.wire()
    patch.status["report"] = report
    condition = Condition(
        type="Analyzed",
        status=ConditionStatus.TRUE,
        reason="KnowledgeBase" if analysis.known_rule else "GenericAnalysis",
        message=f"{reason}; knowledge base {analysis.kb_version}; severity "
        f"{analysis.severity.level.value}",
        last_transition_time=now(),
        observed_generation=body.metadata.get("generation"),
    )
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != "Analyzed"]
    patch.status["conditions"] = [*conditions, condition.wire()]
    patch.status["observedGeneration"] = body.metadata.get("generation")
    kopf.info(body, reason="Analyzed", message=one_line(analysis))
    logger.info("Analyzed: %s", one_line(analysis))


@kopf.on.resume(GROUP, VERSION, "falcoalerts")
@kopf.on.create(GROUP, VERSION, "falcoalerts")
def on_alert(body: kopf.Body, patch: kopf.Patch, logger: Logger, reason: str, **_: Any) -> None:
    if not needs_analysis(dict(body.status), load_knowledge_base().version):
        return
    analyze_body(body, patch, logger, reason="new alert" if reason == "create" else "re-analysis")


@kopf.on.field(GROUP, VERSION, "falcoalerts", field=f"metadata.annotations.{REANALYZE_ANNOTATION}")
def on_reanalyze(body: kopf.Body, patch: kopf.Patch, logger: Logger, new: Any, **_: Any) -> None:
    if new is None:
        return
    analyze_body(body, patch, logger, reason="re-analysis requested by annotation")

"""Analyze each FalcoAlert once per knowledge-base version, or again on request.

Thin on purpose: parse the resource, call ``analyze`` and ``render_markdown``, publish the
status, post one Event. Triggers: creation, operator start (``resume``: picks up alerts analyzed
by an older knowledge base) and a change of the ``falcotriage.io/reanalyze`` annotation.

When a model is configured, the deterministic analysis and report are published first; only
then is the model asked for a narrative, which is added in its own labelled section.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from falco_triage.analysis import AnalysisContext, analyze
from falco_triage.analysis.knowledge import load_knowledge_base
from falco_triage.handlers.state import NamespaceIndex, current_settings, namespace_labels
from falco_triage.k8s.client import api_client
from falco_triage.k8s.status import patch_status
from falco_triage.llm import NarrativeService
from falco_triage.models.alert import MAX_REPORT, PLURAL, FalcoAlertSpec, Phase
from falco_triage.models.analysis import Analysis
from falco_triage.models.common import GROUP, VERSION, Condition, ConditionStatus, now
from falco_triage.models.event import FalcoEvent
from falco_triage.report import one_line, render_markdown
from falco_triage.report.narrative import render_narrative

REANALYZE_ANNOTATION = f"{GROUP}/reanalyze"
# kopf passes each index to handlers as a keyword argument named after the index function.
INDEX = "namespace_labels_index"
NARRATOR = "narrator"

Logger = logging.Logger | logging.LoggerAdapter[Any]


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


def analysis_status(
    body: kopf.Body, analysis: Analysis, report: str, reason: str
) -> dict[str, Any]:
    """The status fields an analysis sets (phase moves on only from Received)."""
    status = dict(body.status)
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
    patch: dict[str, Any] = {
        "analysis": analysis.wire(),
        "report": report,
        "conditions": [*conditions, condition.wire()],
        "observedGeneration": body.metadata.get("generation"),
    }
    if (status.get("phase") or Phase.RECEIVED.value) == Phase.RECEIVED.value:
        patch["phase"] = Phase.ANALYZED.value
    return patch


async def analyze_body(
    body: kopf.Body,
    patch: kopf.Patch,
    logger: Logger,
    namespaces: NamespaceIndex,
    narrator: NarrativeService | None,
    reason: str,
) -> None:
    spec = FalcoAlertSpec.model_validate(dict(body.spec))
    settings = current_settings()
    event = event_from_spec(spec)
    context = AnalysisContext(
        namespace_labels=namespace_labels(namespaces, body.metadata.namespace),
        production_label=settings.operator.production_label,
    )
    analysis = analyze(event, context)
    report = render_markdown(analysis)
    status = analysis_status(body, analysis, report, reason)
    kopf.info(body, reason="Analyzed", message=one_line(analysis))
    logger.info("Analyzed: %s", one_line(analysis))
    if narrator is None or not settings.llm.enabled:
        patch.status.update(status)
        return
    # Publish the deterministic report before waiting on a model.
    await asyncio.to_thread(
        patch_status, api_client(), PLURAL, body.metadata.namespace, body.metadata.name, status
    )
    narrative = await narrator.narrate(analysis, event, spec.fingerprint)
    section = render_narrative(narrative)
    budget = MAX_REPORT - len(section.encode("utf-8")) - 1
    patch.status["narrative"] = narrative.wire()
    patch.status["report"] = render_markdown(analysis, limit=budget) + "\n" + section
    logger.info(
        "Narrative: %s%s",
        narrative.outcome.value,
        f" ({narrative.reason})" if narrative.reason else "",
    )


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
async def on_alert(
    body: kopf.Body,
    patch: kopf.Patch,
    logger: Logger,
    reason: str,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    if not needs_analysis(dict(body.status), load_knowledge_base().version):
        return
    why = "new alert" if reason == "create" else "re-analysis"
    await analyze_body(body, patch, logger, kwargs[INDEX], memo.get(NARRATOR), reason=why)


# NB: a tuple path, because the annotation key itself contains dots.
@kopf.on.field(GROUP, VERSION, PLURAL, field=("metadata", "annotations", REANALYZE_ANNOTATION))
async def on_reanalyze(
    body: kopf.Body,
    patch: kopf.Patch,
    logger: Logger,
    new: Any,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    if new is None:
        return
    why = "re-analysis requested by annotation"
    await analyze_body(body, patch, logger, kwargs[INDEX], memo.get(NARRATOR), reason=why)


@kopf.on.startup()
async def start_narrator(memo: kopf.Memo, **_: Any) -> None:
    """The model client, only when configured (a missing key file stops start-up here)."""
    settings = current_settings().llm
    if settings.enabled:
        from falco_triage.handlers.metrics import registry
        from falco_triage.llm import LlmMetrics

        memo[NARRATOR] = NarrativeService(settings, metrics=LlmMetrics(registry()))


@kopf.on.cleanup()
async def stop_narrator(memo: kopf.Memo, **_: Any) -> None:
    narrator: NarrativeService | None = memo.get(NARRATOR)
    if narrator is not None:
        await narrator.aclose()

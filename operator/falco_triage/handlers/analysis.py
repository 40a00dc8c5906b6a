"""Analyze each FalcoAlert once per knowledge-base version, or again on request.

Thin on purpose: parse the resource, call ``analyze`` and ``render_markdown``, publish the
status, post one Event. Triggers: creation, operator start (``resume``: picks up alerts analyzed
by an older knowledge base) and a change of the ``falcotriage.io/reanalyze`` annotation.

When a model is configured, the deterministic analysis and report are published first; only
then is the model asked for a narrative, which is added in its own labelled section.

The analysis is published conditionally on the alert's ``resourceVersion``
(:func:`~falco_triage.k8s.status.update_status`): the receivers and other writers share this
status, and a condition one of them added is never overwritten by our ``Analyzed``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from falco_triage.analysis import AnalysisContext, analyze
from falco_triage.analysis.knowledge import load_knowledge_base
from falco_triage.handlers.state import NamespaceIndex, current_settings, namespace_labels
from falco_triage.k8s.client import api_client
from falco_triage.k8s.errors import ApiError, Conflict, Invalid, NotFound, Transient
from falco_triage.k8s.rest import RestClient
from falco_triage.k8s.status import StatusChange, update_status
from falco_triage.llm import NarrativeService
from falco_triage.models.alert import MAX_REPORT, PLURAL, FalcoAlertSpec, Phase
from falco_triage.models.analysis import Analysis
from falco_triage.models.common import (
    GROUP,
    VERSION,
    Condition,
    ConditionStatus,
    merge_conditions,
    now,
)
from falco_triage.models.event import FalcoEvent
from falco_triage.report import one_line, render_markdown
from falco_triage.report.narrative import render_narrative

REANALYZE_ANNOTATION = f"{GROUP}/reanalyze"
# kopf passes each index to handlers as a keyword argument named after the index function.
INDEX = "namespace_labels_index"
NARRATOR = "narrator"
# Seconds before kopf retries publishing an analysis: after losing every race to other writers
# (they are done within a second or keep winning, and we keep trying), after a failure the API
# server sent no Retry-After for, and after a 403 (RBAC is fixed by a person, not in seconds).
PUBLISH_CONFLICT_DELAY = 1.0
PUBLISH_RETRY_DELAY = 5.0
PUBLISH_FORBIDDEN_DELAY = 60.0

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


def analyzed_condition(body: kopf.Body, analysis: Analysis, reason: str) -> Condition:
    return Condition(
        type="Analyzed",
        status=ConditionStatus.TRUE,
        reason="KnowledgeBase" if analysis.known_rule else "GenericAnalysis",
        message=f"{reason}; knowledge base {analysis.kb_version}; severity "
        f"{analysis.severity.level.value}",
        last_transition_time=now(),
        observed_generation=body.metadata.get("generation"),
    )


def analysis_status(
    stored: Mapping[str, Any], analysis: Analysis, report: str, condition: Condition
) -> dict[str, Any]:
    """The status fields an analysis sets, on top of the alert as just read.

    Our ``Analyzed`` condition is set among whatever conditions are stored (other writers'
    are kept); the phase moves on only from Received. Computed again on every read, because
    it is written conditionally on that read (:func:`update_status`).
    """
    status = stored.get("status") or {}
    patch: dict[str, Any] = {
        "analysis": analysis.wire(),
        "report": report,
        "conditions": merge_conditions(status.get("conditions"), [condition]),
        "observedGeneration": condition.observed_generation,
    }
    if (status.get("phase") or Phase.RECEIVED.value) == Phase.RECEIVED.value:
        patch["phase"] = Phase.ANALYZED.value
    return patch


async def _publish(body: kopf.Body, change: StatusChange, logger: Logger) -> bool:
    """Write an analysis into the alert's status; False if the alert is gone."""
    namespace, name = body.metadata.namespace, body.metadata.name
    assert name is not None
    write = functools.partial(update_status, known=dict(body))
    try:
        await asyncio.to_thread(write, RestClient(api_client()), PLURAL, namespace, name, change)
    except NotFound:
        logger.info("Deleted before its analysis was published")
        return False
    except Conflict as exc:
        # Lost every race to other writers (a storm of receiver writes): kopf tries again.
        raise kopf.TemporaryError(
            f"analysis not published yet: {exc.message}", delay=PUBLISH_CONFLICT_DELAY
        ) from exc
    except Transient as exc:
        delay = exc.retry_after or PUBLISH_RETRY_DELAY
        raise kopf.TemporaryError(f"analysis not published: {exc.message}", delay=delay) from exc
    except Invalid as exc:
        raise kopf.PermanentError(f"the API server rejected the analysis: {exc.message}") from exc
    except ApiError as exc:  # Forbidden: fixable by granting falcoalerts/status patch
        raise kopf.TemporaryError(
            f"analysis not published: {exc.message}", delay=PUBLISH_FORBIDDEN_DELAY
        ) from exc
    return True


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
    condition = analyzed_condition(body, analysis, reason)
    change = functools.partial(
        analysis_status, analysis=analysis, report=report, condition=condition
    )
    # NB: not through kopf's patch, which is a blind merge patch: the status holds a list
    # (conditions) other writers add to, so it is written conditionally on what was read.
    # The deterministic report goes out before any model is asked for a narrative.
    if not await _publish(body, change, logger):
        return
    kopf.info(body, reason="Analyzed", message=one_line(analysis))
    logger.info("Analyzed: %s", one_line(analysis))
    if narrator is None or not settings.llm.enabled:
        return
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


def _stale(status: kopf.Status, **_: Any) -> bool:
    return needs_analysis(dict(status), load_knowledge_base().version)


# NB: the resume filter keeps kopf from touching alerts that need nothing: without it, every
# operator start wrote each alert twice (kopf's progress annotations, then their removal).
@kopf.on.resume(GROUP, VERSION, PLURAL, when=_stale)
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

"""``analyze(event)``: the expert reading of one Falco event. Pure and deterministic."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml

from falco_triage.analysis.commands import fill
from falco_triage.analysis.fields import fact, get, what_happened, where
from falco_triage.analysis.knowledge import (
    KBBenign,
    KBStep,
    KnowledgeBase,
    RuleKnowledge,
    load_knowledge_base,
)
from falco_triage.analysis.mitre import MitreTable, load_mitre
from falco_triage.analysis.severity import SeverityContext, assess
from falco_triage.analysis.tuning import build_tuning
from falco_triage.models.analysis import (
    Analysis,
    BenignCause,
    Mitre,
    MitreEntry,
    Step,
    WhatHappened,
    Where,
)
from falco_triage.models.event import FalcoEvent

_TECHNIQUE_TAG = re.compile(r"^T\d{4}(\.\d{3})?$", re.IGNORECASE)
_TACTIC_ID_TAG = re.compile(r"^TA\d{4}$", re.IGNORECASE)
EXCEPTIONS_DOC = "https://falco.org/docs/concepts/rules/exceptions/"
MAX_EVIDENCE = 64


@dataclass(frozen=True)
class AnalysisContext:
    """What the cluster knows that the event does not (optional; the CLI has none)."""

    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    production_label: str = "falcotriage.io/environment=production"


def analyze(event: FalcoEvent, context: AnalysisContext | None = None) -> Analysis:
    """Analyze one (already bounded and redacted) event against the knowledge base."""
    ctx = context or AnalysisContext()
    kb = load_knowledge_base()
    table = load_mitre()
    entry = kb.get(event.rule)
    mitre = _mitre(event.tags, entry, table)
    tactic_ids = frozenset(t.id for t in mitre.tactics)
    what = what_happened(event, entry.object if entry else None)
    loc = where(event)
    knowledge = entry or _generic_entry(event, tactic_ids)

    def lookup(name: str) -> str | None:
        return get(event, name)

    severity = assess(event.priority, _severity_context(event, loc, tactic_ids, ctx))
    return Analysis(
        rule=event.rule,
        known_rule=entry is not None,
        ruleset=kb.rulesets.get(event.rule),
        kb_version=kb.version,
        summary=summary_line(event.rule, what, loc),
        detects=knowledge.detects,
        priority=event.priority.value,
        severity=severity,
        what=what,
        where=loc,
        evidence=[fact(event, f) for f in _evidence_fields(event, knowledge)],
        mitre=mitre,
        impact=knowledge.impact,
        benign=[BenignCause(cause=b.cause, how_to_tell=b.how_to_tell) for b in knowledge.benign],
        investigate=[_step(s, lookup) for s in knowledge.investigate],
        mitigate=list(knowledge.mitigate),
        tuning=build_tuning(
            event.rule,
            list(knowledge.exception_fields),
            knowledge.comps(),
            lookup,
            knowledge.falco_yaml,
        ),
        references=_references(knowledge),
    )


def summary_line(rule: str, what: WhatHappened, loc: Where) -> str:
    """One line for Kubernetes Events and terminals: rule, actor, place."""
    actor = what.process or what.user or "unknown actor"
    if what.process and what.user:
        actor = f"{what.process} as {what.user}"
    if loc.kind == "KubernetesObject":
        obj = what.object.value if what.object and what.object.value else "unknown object"
        scope = f"{loc.namespace}/" if loc.namespace else ""
        place = f"{what.event_type or 'unknown verb'} {scope}{obj}"
    elif loc.kind == "Pod":
        place = f"pod {loc.namespace or '?'}/{loc.pod or '?'}"
        if loc.container_name:
            place += f" ({loc.container_name})"
    else:
        place = f"host {loc.node or 'unknown'}"
    return _clip(f"{rule}: {_clip(actor, 200)} in {_clip(place, 300)}", 1000)


def _clip(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _step(step: KBStep, lookup: Any) -> Step:
    if step.command is None:
        return Step(description=step.description)
    command, missing = fill(step.command, lookup)
    description = step.description
    if missing:
        description += " (replace " + ", ".join(f"`<{m}>`" for m in missing) + ": not in the event)"
    return Step(description=description, command=command)


def _severity_context(
    event: FalcoEvent, loc: Where, tactic_ids: frozenset[str], ctx: AnalysisContext
) -> SeverityContext:
    key, _, value = ctx.production_label.partition("=")
    production = bool(key) and ctx.namespace_labels.get(key) == value
    return SeverityContext(
        in_container=loc.kind == "Pod",
        privileged=loc.privileged,
        uid=get(event, "user.uid"),
        tactic_ids=tactic_ids,
        production_namespace=production,
        production_reason=f"The namespace is labelled {ctx.production_label} (production).",
    )


def _mitre(tags: list[str], entry: RuleKnowledge | None, table: MitreTable) -> Mitre:
    tactics: dict[str, MitreEntry] = {}
    techniques: dict[str, MitreEntry] = {}
    for tag in tags:
        if tag.startswith("mitre_") or _TACTIC_ID_TAG.match(tag):
            if (tactic := table.tactic(tag)) is not None:
                tactics.setdefault(tactic.id, tactic)
        elif _TECHNIQUE_TAG.match(tag) and (tech := table.technique(tag)) is not None:
            techniques.setdefault(tech.id, tech)
    sources = ["tags"] if tactics or techniques else []
    if entry is not None and entry.mitre is not None:
        added = False
        if not tactics:
            for tid in entry.mitre.tactics:
                if (tactic := table.tactic(tid)) is not None:
                    tactics.setdefault(tactic.id, tactic)
                    added = True
        if not techniques:
            for tech_id in entry.mitre.techniques:
                if (tech := table.technique(tech_id)) is not None:
                    techniques.setdefault(tech.id, tech)
                    added = True
        if added:
            sources.append("knowledgeBase")
    return Mitre(
        tactics=list(tactics.values())[:16],
        techniques=list(techniques.values())[:32],
        source=" and ".join(sources) or "none",
    )


def _evidence_fields(event: FalcoEvent, knowledge: RuleKnowledge) -> list[str]:
    fields = list(dict.fromkeys(knowledge.evidence))
    return fields[:MAX_EVIDENCE]


def _references(knowledge: RuleKnowledge) -> list[str]:
    refs = list(dict.fromkeys([*knowledge.references, EXCEPTIONS_DOC]))
    return refs[:16]


@cache
def _generic_data() -> dict[str, Any]:
    path = resources.files("falco_triage.analysis") / "data" / "generic.yaml"
    data: dict[str, Any] = yaml.safe_load(path.read_text("utf-8"))
    return data


def _generic_entry(event: FalcoEvent, tactic_ids: frozenset[str]) -> RuleKnowledge:
    """Knowledge for a rule we do not know, from its tags and source only — nothing invented."""
    data = _generic_data()
    ordered = [t for t in data["impact_by_tactic"] if t in tactic_ids]
    impact = " ".join(data["impact_by_tactic"][t] for t in ordered) or (
        f"Falco rated this {event.priority.value}. The rule carries no MITRE ATT&CK tags, so its "
        "impact depends on what the rule watches: read its condition in your rules files."
    )
    audit = event.source == "k8s_audit"
    in_pod = get(event, "k8s.pod.name") is not None
    investigate = data[
        "investigate_audit" if audit else "investigate_pod" if in_pod else "investigate_host"
    ]
    mitigate = [data["mitigate_by_tactic"][t] for t in ordered if t in data["mitigate_by_tactic"]]
    exception_fields = data["exception_fields"].get(
        event.source, data["exception_fields"]["default"]
    )
    evidence = sorted(event.output_fields)[:MAX_EVIDENCE] or ["evt.type"]
    return RuleKnowledge(
        rule=event.rule,
        detects=(
            "This rule is not in the bundled knowledge base (a custom, renamed or newer rule), "
            "so this analysis is driven by the event's tags, priority and fields only."
        ),
        impact=impact,
        evidence=evidence,
        benign=[KBBenign.model_validate(b) for b in data["benign"]],
        investigate=[KBStep.model_validate(s) for s in investigate],
        mitigate=(mitigate + list(data["mitigate_default"]))[:8],
        exception_fields=exception_fields,
    )


def knowledge_base() -> KnowledgeBase:
    """The loaded knowledge base (for coverage checks and the CLI)."""
    return load_knowledge_base()

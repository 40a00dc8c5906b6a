"""analyze() states only what the event and knowledge base say: facts copied, missing fields
unknown, MITRE from tags (knowledge base only as fallback), severity adjusted with reasons,
investigation commands filled and quoted, tuning snippets valid Falco exceptions."""

from __future__ import annotations

from typing import Any

import yaml

from falco_triage.analysis import AnalysisContext, analyze
from falco_triage.models.event import FalcoEvent


def _event(
    rule: str = "Terminal shell in container",
    tags: list[str] | None = None,
    priority: str = "Notice",
    source: str = "syscall",
    **fields: Any,
) -> FalcoEvent:
    return FalcoEvent.model_validate(
        {
            "time": "2026-11-25T10:21:04.123456789Z",
            "rule": rule,
            "priority": priority,
            "source": source,
            "hostname": "worker-1",
            "output_fields": fields,
            "tags": ["container", "shell", "mitre_execution", "T1059"] if tags is None else tags,
        }
    )


POD = {
    "k8s.ns.name": "shop",
    "k8s.pod.name": "web-0",
    "container.id": "7f1c2a9d3e4b",
    "container.name": "web",
    "container.image.repository": "nginx",
}


def test_facts_come_from_the_event() -> None:
    a = analyze(
        _event(
            **POD,
            **{
                "proc.name": "bash",
                "proc.pname": "runc",
                "user.name": "root",
                "user.uid": 0,
                "user.loginuid": -1,
                "proc.cmdline": "bash -i",
            },
        )
    )
    assert a.known_rule
    assert a.ruleset == "stable"
    assert (a.what.process, a.what.parent, a.what.user) == ("bash", "runc", "root")
    assert (a.what.uid, a.what.loginuid, a.what.command_line) == ("0", "-1", "bash -i")
    assert a.what.time == "2026-11-25T10:21:04.123456Z"
    assert (a.where.namespace, a.where.pod, a.where.container_name) == ("shop", "web-0", "web")
    assert a.where.kind == "Pod"
    assert a.where.node == "worker-1"
    assert a.summary == "Terminal shell in container: bash as root in pod shop/web-0 (web)"


def test_missing_fields_are_unknown_not_guessed() -> None:
    a = analyze(_event())
    assert a.what.process is None
    assert a.what.user is None
    assert a.where.pod is None
    assert a.where.kind == "Host"
    assert all(f.value is None for f in a.evidence)
    for step in a.investigate:
        if step.command and "<" in step.command:
            assert "not in the event" in step.description


def test_na_values_count_as_missing() -> None:
    a = analyze(_event(**{"proc.pname": "<NA>", "proc.name": "bash"}))
    assert a.what.parent is None
    assert a.what.process == "bash"


def test_mitre_from_tags_with_names_and_links() -> None:
    a = analyze(_event())
    assert [(t.id, t.name) for t in a.mitre.tactics] == [("TA0002", "Execution")]
    assert [(t.id, t.name) for t in a.mitre.techniques] == [
        ("T1059", "Command and Scripting Interpreter")
    ]
    assert a.mitre.techniques[0].url == "https://attack.mitre.org/techniques/T1059/"
    assert a.mitre.source == "tags"


def test_mitre_falls_back_to_knowledge_base_when_tags_lack_it() -> None:
    a = analyze(_event(tags=[]))
    assert a.mitre.source == "knowledgeBase" or a.mitre.source == "none"
    sub = analyze(_event(tags=["mitre_execution", "T1059.004"]))
    assert sub.mitre.techniques[0].url == "https://attack.mitre.org/techniques/T1059/004/"


def test_unknown_rule_gets_generic_analysis_from_tags() -> None:
    a = analyze(
        _event(
            rule="Acme: crypto miner pool connection",
            priority="Critical",
            tags=["mitre_impact", "T1496"],
            **POD,
            **{"proc.name": "xmrig"},
        )
    )
    assert not a.known_rule
    assert a.ruleset is None
    assert "not in the bundled knowledge base" in a.detects
    assert "Impact" in a.impact
    assert [t.id for t in a.mitre.techniques] == ["T1496"]
    assert a.mitre.techniques[0].name == "Resource Hijacking"
    assert a.investigate
    assert a.mitigate
    assert a.benign


def test_unknown_rule_without_tags_says_so() -> None:
    a = analyze(_event(rule="custom", tags=[]))
    assert a.mitre.source == "none"
    assert not a.mitre.tactics
    assert "no MITRE ATT&CK tags" in a.impact


def test_severity_adjusted_with_reasons() -> None:
    base = analyze(_event(**POD, **{"user.uid": 1000}))
    assert base.severity.level == "Low"
    assert base.severity.adjustments == []
    root_priv = analyze(_event(**POD, **{"user.uid": 0, "container.privileged": True}))
    assert root_priv.severity.base_level == "Low"
    assert root_priv.severity.level == "High"
    reasons = " ".join(a.reason for a in root_priv.severity.adjustments)
    assert "privileged" in reasons
    assert "root" in reasons
    prod = analyze(
        _event(**POD, **{"user.uid": 1000}),
        AnalysisContext(namespace_labels={"falcotriage.io/environment": "production"}),
    )
    assert prod.severity.level == "Medium"
    assert "production" in prod.severity.adjustments[0].reason


def test_severity_is_capped() -> None:
    a = analyze(
        _event(priority="Emergency", **POD, **{"user.uid": 0, "container.privileged": True})
    )
    assert a.severity.level == "Critical"
    assert a.severity.score == 4


def test_investigation_commands_use_real_quoted_names() -> None:
    a = analyze(_event(**{**POD, "k8s.pod.name": "web 0$(id)"}))
    commands = [s.command for s in a.investigate if s.command]
    assert any("'web 0$(id)'" in c for c in commands)
    assert not any("{pod}" in c or "{namespace}" in c for c in commands)


def test_tuning_snippet_is_a_valid_falco_exception() -> None:
    a = analyze(_event(**POD, **{"proc.name": "bash", "proc.pname": "runc"}))
    assert a.tuning.exception_yaml is not None
    doc = yaml.safe_load(a.tuning.exception_yaml)
    assert isinstance(doc, list)
    assert len(doc) == 1
    rule = doc[0]
    assert rule["rule"] == "Terminal shell in container"
    assert rule["override"] == {"exceptions": "append"}
    (exc,) = rule["exceptions"]
    assert set(exc) == {"name", "fields", "comps", "values"}
    assert len(exc["fields"]) == len(exc["comps"]) == len(exc["values"][0])
    for field, value in zip(exc["fields"], exc["values"][0], strict=True):
        assert value == a.evidence[0].value or value is not None
        assert field in a.tuning.exception_fields


def test_tuning_leaves_out_fields_the_event_lacks() -> None:
    a = analyze(_event())
    if a.tuning.exception_yaml is None:
        assert "carries no usable value" in a.tuning.note
    else:
        assert "Left out" in a.tuning.note


def test_k8s_audit_event_targets_the_api_object() -> None:
    a = analyze(
        _event(
            rule="Create Privileged Pod",
            priority="Warning",
            source="k8s_audit",
            tags=["k8s"],
            **{
                "ka.user.name": "system:serviceaccount:ci:deployer",
                "ka.verb": "create",
                "ka.target.resource": "pods",
                "ka.target.namespace": "shop",
                "ka.target.name": "debug-tools",
            },
        )
    )
    assert a.where.kind == "KubernetesObject"
    assert a.where.namespace == "shop"
    assert a.what.user == "system:serviceaccount:ci:deployer"
    assert a.what.event_type == "create"
    assert a.summary.endswith("in create shop/debug-tools")


def test_analysis_is_deterministic() -> None:
    event = _event(**POD, **{"proc.name": "bash"})
    assert analyze(event) == analyze(event)


def test_long_values_never_break_the_analysis_bounds() -> None:
    """Values up to the receiver's field limit in every placeholder field still analyze: long
    values become placeholders in commands and are left out of exceptions."""
    long = {
        f: "x" * 4096
        for f in (
            "k8s.ns.name",
            "k8s.pod.name",
            "container.name",
            "container.id",
            "container.image.repository",
            "proc.name",
            "proc.pname",
            "fd.name",
        )
    }
    a = analyze(_event(**long))
    assert all(len(s.command or "") <= 4096 for s in a.investigate)
    assert any("<pod>" in (s.command or "") for s in a.investigate)
    assert a.tuning.exception_yaml is None
    assert "too long" in a.tuning.note

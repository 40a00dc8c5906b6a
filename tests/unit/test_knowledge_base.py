"""The knowledge base covers every public Falco rule (tests/data/falco_rules_facts.json, 145
rules), and every entry is usable: placeholders known, exception fields real Falco fields,
snippets that parse, MITRE references that resolve."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from falco_triage.analysis.knowledge import load_knowledge_base
from falco_triage.analysis.mitre import UNKNOWN_NAME, load_mitre

FACTS: list[dict[str, Any]] = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "falco_rules_facts.json").read_text("utf-8")
)
FIELD = re.compile(r"^[a-z0-9_]+(\.[a-zA-Z0-9_]+)+(\[[^\]]+\])?$")
RULESET = {
    "stable": "stable",
    "incubating": "incubating",
    "sandbox": "sandbox",
    "k8saudit plugin rules": "k8saudit",
    "deprecated (archived, not maintained)": "deprecated",
}


def test_facts_are_the_full_public_set() -> None:
    assert len(FACTS) == 145
    assert len({f["rule"] for f in FACTS}) == 145


def test_every_public_rule_has_an_entry() -> None:
    kb = load_knowledge_base()
    missing = sorted(f["rule"] for f in FACTS if f["rule"] not in kb.rules)
    assert missing == [], f"{len(missing)} rules without a knowledge-base entry: {missing}"


def test_entries_are_filed_under_their_ruleset() -> None:
    kb = load_knowledge_base()
    wrong = [
        (f["rule"], kb.rulesets.get(f["rule"]))
        for f in FACTS
        if kb.rulesets.get(f["rule"]) != RULESET[f["ruleset"]]
    ]
    assert wrong == []


def test_no_entry_for_an_unknown_rule() -> None:
    """Entries must name real rules exactly; a typo would silently never match."""
    known = {f["rule"] for f in FACTS}
    assert sorted(set(load_knowledge_base().rules) - known) == []


@pytest.mark.parametrize("fact", FACTS, ids=[f["rule"] for f in FACTS])
def test_entry_is_usable(fact: dict[str, Any]) -> None:
    entry = load_knowledge_base().get(fact["rule"])
    if entry is None:
        pytest.fail(f"no entry for {fact['rule']!r}")
    for field in [*entry.exception_fields, *entry.evidence]:
        assert FIELD.match(field), f"{field!r} is not a Falco field name"
    if fact["source"] == "k8s_audit":
        assert all(f.startswith(("ka.", "jevt.")) for f in entry.exception_fields)
    assert len(entry.comps()) == len(entry.exception_fields)
    if entry.falco_yaml is not None:
        yaml.safe_load(entry.falco_yaml)
    table = load_mitre()
    if not fact["mitre_technique_ids"]:
        assert entry.mitre is not None, "tags lack a technique: the entry must give one"
        assert entry.mitre.techniques, "tags lack a technique: the entry must give one"
    if entry.mitre is not None:
        for technique in entry.mitre.techniques:
            resolved = table.technique(technique)
            assert resolved is not None, technique
            assert resolved.name != UNKNOWN_NAME, technique
        for tactic in entry.mitre.tactics:
            resolved_tactic = table.tactic(tactic)
            assert resolved_tactic is not None, tactic
            assert resolved_tactic.name != UNKNOWN_NAME, tactic


def test_every_technique_in_falco_tags_has_a_name() -> None:
    table = load_mitre()
    for fact in FACTS:
        for technique in fact["mitre_technique_ids"]:
            resolved = table.technique(technique)
            assert resolved is not None, technique
            assert resolved.name != UNKNOWN_NAME, technique
        for tactic in fact["mitre_tactics"]:
            entry = table.tactic(tactic["tag"])
            assert entry is not None
            assert entry.id == tactic["id"]
            assert entry.name == tactic["name"]

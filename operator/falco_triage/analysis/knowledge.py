"""The knowledge base: one expert entry per Falco rule, kept as YAML data in ``kb/``.

Entries are written by people and validated here at load time, so a typo in a data file fails
the test suite, not a production analysis.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

# Placeholders an investigation command may use. The report fills each with the shell-quoted
# value from the event, or leaves ``<name>`` when the event did not carry it.
PLACEHOLDERS = {
    "namespace": "k8s.ns.name",
    "pod": "k8s.pod.name",
    "container": "container.name",
    "container_id": "container.id",
    "node": "hostname",
    "image": "container.image.repository",
    "pid": "proc.pid",
    "ppid": "proc.ppid",
    "process": "proc.name",
    "exepath": "proc.exepath",
    "file": "fd.name",
    "user": "user.name",
    "audit_user": "ka.user.name",
    "audit_resource": "ka.target.resource",
    "audit_name": "ka.target.name",
    "audit_namespace": "ka.target.namespace",
}
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
EXCEPTION_COMPS = {"=", "!=", "in", "pmatch", "startswith", "endswith", "contains", "glob"}


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KBBenign(_Entry):
    cause: str = Field(min_length=10)
    how_to_tell: str = Field(min_length=10)


class KBStep(_Entry):
    description: str = Field(min_length=10)
    command: str | None = None

    @field_validator("command")
    @classmethod
    def _known_placeholders(cls, value: str | None) -> str | None:
        if value is not None:
            unknown = set(_PLACEHOLDER.findall(value)) - PLACEHOLDERS.keys()
            if unknown:
                raise ValueError(
                    f"unknown placeholders {sorted(unknown)}; use {sorted(PLACEHOLDERS)}"
                )
        return value


class KBMitre(_Entry):
    tactics: list[str] = Field(default_factory=list)
    techniques: list[str] = Field(default_factory=list)


class RuleKnowledge(_Entry):
    """What an expert knows about one Falco rule."""

    rule: str = Field(min_length=1)
    detects: str = Field(min_length=20, description="What the rule detects, in plain words")
    impact: str = Field(min_length=20, description="Why it matters if it is malicious")
    evidence: list[str] = Field(min_length=1, description="Falco fields that carry the evidence")
    object: str | None = Field(default=None, description="Field naming the file/network/API object")
    benign: list[KBBenign] = Field(min_length=1)
    investigate: list[KBStep] = Field(min_length=2)
    mitigate: list[str] = Field(min_length=2)
    exception_fields: list[str] = Field(min_length=1, max_length=4)
    exception_comps: list[str] | None = None
    mitre: KBMitre | None = None
    falco_yaml: str | None = None
    references: list[str] = Field(default_factory=list)

    @field_validator("exception_comps")
    @classmethod
    def _comps(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not set(value) <= EXCEPTION_COMPS:
            raise ValueError(f"exception comps must be among {sorted(EXCEPTION_COMPS)}")
        return value

    def comps(self) -> list[str]:
        return list(self.exception_comps or ["="] * len(self.exception_fields))


class KBFile(_Entry):
    ruleset: str
    rules: list[RuleKnowledge]


class KnowledgeBase(BaseModel):
    version: str
    rules: dict[str, RuleKnowledge]
    rulesets: dict[str, str]

    def get(self, rule: str) -> RuleKnowledge | None:
        return self.rules.get(rule)


KB_FILES = ("stable", "incubating", "sandbox", "k8saudit", "deprecated")


@cache
def load_knowledge_base() -> KnowledgeBase:
    """Load and validate every ``kb/*.yaml`` file once per process."""
    root = resources.files("falco_triage.analysis") / "kb"
    meta = yaml.safe_load((root / "VERSION.yaml").read_text(encoding="utf-8"))
    rules: dict[str, RuleKnowledge] = {}
    rulesets: dict[str, str] = {}
    for name in KB_FILES:
        path = root / f"{name}.yaml"
        if not path.is_file():
            continue
        data = KBFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        for entry in data.rules:
            if entry.rule in rules:
                raise ValueError(f"rule {entry.rule!r} appears twice in the knowledge base")
            rules[entry.rule] = entry
            rulesets[entry.rule] = data.ruleset
    return KnowledgeBase(version=str(meta["version"]), rules=rules, rulesets=rulesets)

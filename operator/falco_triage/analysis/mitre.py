"""MITRE ATT&CK lookups: tactic tags and technique IDs to names and links."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml

from falco_triage.models.analysis import MitreEntry

_TECHNIQUE = re.compile(r"^T\d{4}(\.\d{3})?$")
_TACTIC_ID = re.compile(r"^TA\d{4}$")
UNKNOWN_NAME = "(not in the bundled ATT&CK table)"


@dataclass(frozen=True)
class MitreTable:
    tactics_by_tag: dict[str, MitreEntry]
    tactics_by_id: dict[str, MitreEntry]
    techniques: dict[str, str]

    def tactic(self, key: str) -> MitreEntry | None:
        """A tactic from a Falco tag (``mitre_execution``) or an ID (``TA0002``)."""
        if key in self.tactics_by_tag:
            return self.tactics_by_tag[key]
        upper = key.upper()
        if _TACTIC_ID.match(upper):
            return self.tactics_by_id.get(upper) or MitreEntry(
                id=upper, name=UNKNOWN_NAME, url=tactic_url(upper)
            )
        return None

    def technique(self, technique_id: str) -> MitreEntry | None:
        """A technique from its ID; unknown but well-formed IDs keep the ID and link."""
        upper = technique_id.upper()
        if not _TECHNIQUE.match(upper):
            return None
        name = self.techniques.get(upper, UNKNOWN_NAME)
        return MitreEntry(id=upper, name=name, url=technique_url(upper))


def tactic_url(tactic_id: str) -> str:
    return f"https://attack.mitre.org/tactics/{tactic_id}/"


def technique_url(technique_id: str) -> str:
    return f"https://attack.mitre.org/techniques/{technique_id.replace('.', '/')}/"


@cache
def load_mitre() -> MitreTable:
    text = (resources.files("falco_triage.analysis") / "data" / "mitre.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    by_tag: dict[str, MitreEntry] = {}
    by_id: dict[str, MitreEntry] = {}
    for row in data["tactics"]:
        entry = MitreEntry(id=row["id"], name=row["name"], url=tactic_url(row["id"]))
        by_tag[row["tag"]] = entry
        by_id[row["id"]] = entry
    techniques = {str(k): str(v) for k, v in data["techniques"].items()}
    return MitreTable(tactics_by_tag=by_tag, tactics_by_id=by_id, techniques=techniques)

"""Golden reports: for every sample event in tests/data/events/ (real-looking Falco and
Falcosidekick payloads, 15+ rules) the Markdown report matches its reviewed golden file.

Regenerate after an intended change with ``FALCO_TRIAGE_UPDATE_GOLDEN=1 pytest tests/unit``
and review the diff like code.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from falco_triage.analysis import analyze
from falco_triage.events.normalize import load_events
from falco_triage.report import render_markdown

DATA = Path(__file__).resolve().parents[1] / "data"
EVENTS = sorted((DATA / "events").glob("**/*.json"))
GOLDEN = DATA / "golden" / "reports"
UPDATE = os.environ.get("FALCO_TRIAGE_UPDATE_GOLDEN") == "1"


def test_enough_rules_are_covered() -> None:
    rules = {e.rule for path in EVENTS for e in load_events(path.read_bytes())}
    assert len(rules) >= 10, sorted(rules)


@pytest.mark.parametrize("path", EVENTS, ids=[p.stem for p in EVENTS])
def test_report_matches_golden(path: Path) -> None:
    events = load_events(path.read_bytes())
    report = "\n---\n\n".join(render_markdown(analyze(e)) for e in events)
    golden = GOLDEN / f"{path.parent.name}-{path.stem}.md"
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(report, encoding="utf-8")
    assert golden.exists(), f"no golden file {golden}; run with FALCO_TRIAGE_UPDATE_GOLDEN=1"
    assert report == golden.read_text(encoding="utf-8")

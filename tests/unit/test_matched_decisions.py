"""The rate-limit ledger of Matched decisions: what an alert's status says replaces what it said
before, deletions and other outcomes drop it, and readers get a snapshot."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from falco_triage.handlers.decisions import MatchedDecisions


def _status(outcome: str, policy: str = "shop/isolate", at: str = "2026-11-25T10:00:00Z") -> Any:
    return {"decision": {"outcome": outcome, "policy": policy, "decidedAt": at}}


def test_matched_decisions_are_kept_per_policy() -> None:
    ledger = MatchedDecisions()
    ledger.observe("a", _status("Matched"))
    ledger.observe("b", _status("Matched", at="2026-11-25T10:05:00Z"))
    ledger.observe("c", _status("Matched", policy="ClusterResponsePolicy/contain"))
    assert sorted(ledger["shop/isolate"]) == [
        ("a", "2026-11-25T10:00:00Z"),
        ("b", "2026-11-25T10:05:00Z"),
    ]
    assert set(ledger) == {"shop/isolate", "ClusterResponsePolicy/contain"}
    assert ledger.total == 3


def test_other_outcomes_and_missing_fields_do_not_count() -> None:
    ledger = MatchedDecisions()
    ledger.observe("a", _status("NoMatch"))
    ledger.observe("b", _status("RateLimited"))
    ledger.observe("c", {"decision": {"outcome": "Matched", "policy": "shop/isolate"}})
    ledger.observe("d", {})
    assert ledger.get("shop/isolate") is None
    assert ledger.total == 0


def test_a_later_status_replaces_the_earlier_one() -> None:
    ledger = MatchedDecisions()
    ledger.observe("a", _status("Matched"))
    ledger.observe("a", _status("Matched", policy="shop/label"))
    assert "shop/isolate" not in ledger
    assert list(ledger["shop/label"]) == [("a", "2026-11-25T10:00:00Z")]
    ledger.observe("a", {"phase": "Analyzed"})  # a status with no decision (edited by hand)
    assert len(ledger) == 0


def test_deleted_alerts_are_forgotten() -> None:
    ledger = MatchedDecisions()
    ledger.observe("a", _status("Matched"))
    ledger.observe("b", _status("Matched"))
    ledger.forget("a")
    ledger.forget("never-seen")
    assert list(ledger["shop/isolate"]) == [("b", "2026-11-25T10:00:00Z")]


def test_readers_get_a_snapshot() -> None:
    ledger = MatchedDecisions()
    ledger.observe("a", _status("Matched"))
    entries = ledger["shop/isolate"]
    ledger.observe("b", _status("Matched"))
    assert len(entries) == 1


def test_the_per_event_success_line_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("kopf.objects")
    with caplog.at_level(logging.INFO, logger="kopf.objects"):
        logger.info("Handler 'track_matched_decisions' succeeded.")
        logger.info("Handler 'on_alert' succeeded.")
    assert [r.getMessage() for r in caplog.records] == ["Handler 'on_alert' succeeded."]

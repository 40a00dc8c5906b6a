"""Our status conditions are set by type among everyone's: other writers' conditions stay
exactly as stored and in place, ours replace the stored one of their type (or are appended),
and ``lastTransitionTime`` moves only when the status does. The analysis and policy status
builders compute their patch that way from the object as read."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from falco_triage.analysis import analyze
from falco_triage.handlers.analysis import analysis_status
from falco_triage.handlers.policies import validity_status
from falco_triage.models.common import Condition, ConditionStatus, merge_conditions
from tests.unit.factories import make_event

EARLIER = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
EARLIER_TEXT = "2026-11-25T09:00:00Z"
NOW_TEXT = "2026-11-25T12:00:00Z"


def _ours(
    status: ConditionStatus = ConditionStatus.TRUE,
    type_: str = "Analyzed",
    reason: str = "KnowledgeBase",
    message: str = "new",
) -> Condition:
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=NOW,
        observed_generation=2,
    )


def _stored(type_: str, status: str = "True", message: str = "old", **extra: Any) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": "Before",
        "message": message,
        "lastTransitionTime": EARLIER_TEXT,
        **extra,
    }


def test_foreign_conditions_are_kept_exactly_and_in_place() -> None:
    # A foreign condition need not follow our model (a reason with a dash, an extra field).
    foreign_a = _stored("StormMerge", reason="outside-writer", owner="someone")
    foreign_b = _stored("Ready", status="False")
    stored = [foreign_a, _stored("Analyzed"), foreign_b]
    merged = merge_conditions(stored, [_ours()])
    assert [c["type"] for c in merged] == ["StormMerge", "Analyzed", "Ready"]
    assert merged[0] == foreign_a
    assert merged[2] == foreign_b
    assert merged[1]["message"] == "new"


def test_ours_replaces_the_stored_one_of_its_type_only() -> None:
    merged = merge_conditions([_stored("Analyzed", message="old")], [_ours(message="new")])
    assert merged == [
        {
            "type": "Analyzed",
            "status": "True",
            "reason": "KnowledgeBase",
            "message": "new",
            "lastTransitionTime": EARLIER_TEXT,  # same status: not a transition
            "observedGeneration": 2,
        }
    ]


def test_a_new_condition_type_is_appended() -> None:
    merged = merge_conditions([_stored("StormReplace")], [_ours()])
    assert [c["type"] for c in merged] == ["StormReplace", "Analyzed"]
    assert merged[1]["lastTransitionTime"] == NOW_TEXT


def test_nothing_stored() -> None:
    assert merge_conditions(None, [_ours()]) == [_ours().wire()]
    assert merge_conditions([], [_ours()]) == [_ours().wire()]


def test_a_status_change_is_a_transition() -> None:
    merged = merge_conditions(
        [_stored("Valid", status="True")],
        [_ours(ConditionStatus.FALSE, type_="Valid", reason="Invalid")],
    )
    assert merged[0]["status"] == "False"
    assert merged[0]["lastTransitionTime"] == NOW_TEXT


def test_same_status_keeps_the_stored_transition_time_but_takes_reason_and_message() -> None:
    merged = merge_conditions(
        [_stored("Analyzed", message="kb 1")], [_ours(reason="GenericAnalysis", message="kb 2")]
    )
    assert merged[0]["lastTransitionTime"] == EARLIER_TEXT
    assert (merged[0]["reason"], merged[0]["message"]) == ("GenericAnalysis", "kb 2")


def test_a_stored_condition_without_transition_time_gets_ours() -> None:
    stored = _stored("Analyzed")
    del stored["lastTransitionTime"]
    assert merge_conditions([stored], [_ours()])[0]["lastTransitionTime"] == NOW_TEXT


def test_duplicates_of_our_type_collapse_into_one_and_foreign_duplicates_stay() -> None:
    stored = [
        _stored("Analyzed", message="first"),
        _stored("Other", message="a"),
        _stored("Analyzed", message="second"),
        _stored("Other", message="b"),
    ]
    merged = merge_conditions(stored, [_ours()])
    assert [(c["type"], c["message"]) for c in merged] == [
        ("Analyzed", "new"),
        ("Other", "a"),
        ("Other", "b"),
    ]


def test_several_of_ours_at_once() -> None:
    stored = [_stored("B"), _stored("Foreign"), _stored("A", status="False")]
    merged = merge_conditions(stored, [_ours(type_="A"), _ours(type_="B"), _ours(type_="C")])
    assert [c["type"] for c in merged] == ["B", "Foreign", "A", "C"]
    times = {c["type"]: c["lastTransitionTime"] for c in merged}
    assert times == {"B": EARLIER_TEXT, "Foreign": EARLIER_TEXT, "A": NOW_TEXT, "C": NOW_TEXT}


def test_stored_input_is_not_modified() -> None:
    stored = [_stored("Analyzed"), _stored("Foreign")]
    snapshot = [dict(c) for c in stored]
    merged = merge_conditions(stored, [_ours()])
    merged[1]["message"] = "changed"
    assert stored == snapshot


def test_analysis_status_keeps_other_writers_conditions_and_counts() -> None:
    stored = {
        "metadata": {"resourceVersion": "7", "generation": 2},
        "status": {
            "phase": "Received",
            "occurrences": {"count": 41},
            "conditions": [_stored("StormMerge"), _stored("Analyzed", message="kb 1")],
        },
    }
    patch = analysis_status(stored, analyze(make_event()), "report", _ours())
    assert [c["type"] for c in patch["conditions"]] == ["StormMerge", "Analyzed"]
    assert patch["conditions"][0] == _stored("StormMerge")
    assert patch["phase"] == "Analyzed"
    assert patch["observedGeneration"] == 2
    assert "occurrences" not in patch  # the receivers' counts are never written here


def test_analysis_status_moves_the_phase_on_only_from_received() -> None:
    analysis = analyze(make_event())
    for phase in ("NoAction", "PendingApproval", "Remediated"):
        patch = analysis_status({"status": {"phase": phase}}, analysis, "r", _ours())
        assert "phase" not in patch
    assert analysis_status({}, analysis, "r", _ours())["phase"] == "Analyzed"


def test_validity_status_keeps_other_writers_conditions() -> None:
    stored = {"status": {"conditions": [_stored("Synced"), _stored("Valid", status="True")]}}
    invalid = _ours(ConditionStatus.FALSE, type_="Valid", reason="Invalid", message="bad")
    patch = validity_status(stored, invalid, 4)
    assert patch["observedGeneration"] == 4
    assert patch["conditions"][0] == _stored("Synced")
    assert (patch["conditions"][1]["status"], patch["conditions"][1]["message"]) == (
        "False",
        "bad",
    )

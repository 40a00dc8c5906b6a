"""Retention picks exactly the alerts to delete: expired by last-seen age, then the excess over
each namespace's cap — settled alerts first, least recently seen next — with a reason each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from falco_triage.retention import AlertSummary, select_for_deletion

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _alert(name: str, age_minutes: int, phase: str = "Analyzed", ns: str = "shop") -> AlertSummary:
    return AlertSummary(ns, name, f"uid-{name}", "1", NOW - timedelta(minutes=age_minutes), phase)


def test_expired_alerts_are_deleted_with_reason() -> None:
    chosen = select_for_deletion(
        [_alert("old", 120), _alert("new", 5)], NOW, timedelta(hours=1), 100
    )
    assert [(a.name, r) for a, r in chosen] == [
        ("old", "not seen for more than 1h (last seen 2026-11-25T10:00:00Z)")
    ]


def test_cap_keeps_newest_and_removes_settled_first() -> None:
    alerts = [
        _alert("a-oldest-active", 50, phase="Remediated"),
        _alert("b-rolled-back-recent", 1, phase="RolledBack"),
        _alert("c-old", 40),
        _alert("d-new", 2),
        _alert("other-ns", 55, ns="web"),
    ]
    chosen = select_for_deletion(alerts, NOW, timedelta(days=7), 2)
    names = [a.name for a, _ in chosen]
    # shop has 4, cap 2: the settled ones go first (c-old is older than b), active last.
    assert names == ["b-rolled-back-recent", "c-old"]
    assert all(r == "namespace shop holds more than 2 alerts" for _, r in chosen)


def test_nothing_to_do() -> None:
    assert select_for_deletion([_alert("x", 1)], NOW, timedelta(hours=1), 10) == []


def test_expired_do_not_count_against_the_cap() -> None:
    alerts = [_alert("expired", 600), _alert("k1", 1), _alert("k2", 2)]
    chosen = select_for_deletion(alerts, NOW, timedelta(hours=1), 2)
    assert [a.name for a, _ in chosen] == ["expired"]

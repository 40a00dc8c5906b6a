"""A policy's counters count each alert once, however often the counting is re-run.

The responder counts an alert before writing the phase that settles it, so a crash in between
makes it count again; ``status.recentlyCounted`` (bounded, newest last) holds the keys already
counted, written in the same resourceVersion-conditional patch as the increments. Covered: the
pure computation (idempotent per key, matched and actions counted separately, the bound), and
the read-modify-write (a 409 recomputes from what the other writer left, including its keys).
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from pydantic import ValidationError

from falco_triage.k8s.errors import Conflict
from falco_triage.k8s.policy_status import (
    PolicyName,
    Tally,
    count_alert,
    counted_status,
)
from falco_triage.k8s.rest import RestClient
from falco_triage.models.crd import all_crds
from falco_triage.models.policy import MAX_RECENTLY_COUNTED, PolicyStatus
from tests.unit.fake_rest import FakeRest

UID = "0b6c3f7e-4a55-4c1e-9d0c-2f1f5a1d9e01"
OTHER = "7d0e2c1a-9b1f-4f8e-8a43-5c7b9a0e6d22"
POLICY = PolicyName("ResponsePolicy", "shop", "contain")
PATH = "/apis/falcotriage.io/v1alpha1/namespaces/shop/responsepolicies/contain"


def _keys(n: int) -> list[str]:
    return [f"00000000-0000-0000-0000-{i:012d}" for i in range(n)]


# -- the pure computation ----------------------------------------------------------------------


def test_an_enforce_alert_counts_its_match_and_actions_under_two_keys() -> None:
    status = {"matchedAlerts": 4, "actionsTaken": 9, "recentlyCounted": [OTHER]}
    new = counted_status(status, Tally(UID, matched=True, actions=3))
    assert new == {
        "matchedAlerts": 5,
        "actionsTaken": 12,
        "recentlyCounted": [OTHER, UID, f"{UID}/actions"],
    }


def test_counting_again_adds_nothing() -> None:
    """The re-run after a crash between the count and the phase write."""
    tally = Tally(UID, matched=True, actions=3)
    first = counted_status({}, tally)
    assert first == {
        "matchedAlerts": 1,
        "actionsTaken": 3,
        "recentlyCounted": [UID, UID + "/actions"],
    }
    assert counted_status(first, tally) is None
    # A re-run that saw a different result (its last step re-run) does not correct the count.
    assert counted_status(first, Tally(UID, matched=True, actions=2)) is None


def test_an_approved_alert_counts_its_match_then_its_actions() -> None:
    """RequireApproval: matched when it starts waiting, its actions once approved."""
    waiting = counted_status({}, Tally(UID, matched=True))
    assert waiting == {"matchedAlerts": 1, "actionsTaken": 0, "recentlyCounted": [UID]}
    assert counted_status(waiting, Tally(UID, matched=True)) is None
    acted = counted_status(waiting, Tally(UID, actions=2))
    assert acted == {
        "matchedAlerts": 1,
        "actionsTaken": 2,
        "recentlyCounted": [UID, UID + "/actions"],
    }
    assert counted_status(acted, Tally(UID, actions=2)) is None


def test_a_match_already_counted_is_skipped_while_the_actions_still_count() -> None:
    """Killed after counting a RequireApproval match but before PendingApproval was written,
    then approved: the re-run counts match and actions, and only the actions are new."""
    waiting = {"matchedAlerts": 1, "actionsTaken": 0, "recentlyCounted": [UID]}
    new = counted_status(waiting, Tally(UID, matched=True, actions=2))
    assert new == {
        "matchedAlerts": 1,
        "actionsTaken": 2,
        "recentlyCounted": [UID, UID + "/actions"],
    }


def test_zero_actions_settle_the_actions_share() -> None:
    new = counted_status({}, Tally(UID, matched=True, actions=0))
    assert new == {
        "matchedAlerts": 1,
        "actionsTaken": 0,
        "recentlyCounted": [UID, UID + "/actions"],
    }
    assert counted_status(new, Tally(UID, actions=1)) is None


def test_the_list_is_bounded_and_drops_the_oldest() -> None:
    full = _keys(MAX_RECENTLY_COUNTED)
    new = counted_status(
        {"matchedAlerts": 7, "actionsTaken": 7, "recentlyCounted": full},
        Tally(UID, matched=True, actions=1),
    )
    assert new is not None
    assert len(new["recentlyCounted"]) == MAX_RECENTLY_COUNTED
    assert new["recentlyCounted"] == [*full[2:], UID, UID + "/actions"]
    assert (new["matchedAlerts"], new["actionsTaken"]) == (8, 8)
    # Still under the bound, nothing is dropped.
    short = counted_status({"recentlyCounted": full[:10]}, Tally(UID, matched=True))
    assert short is not None
    assert short["recentlyCounted"] == [*full[:10], UID]


def test_a_key_already_present_is_not_moved() -> None:
    """Keys keep the order they were counted in: re-counting does not refresh one."""
    status = {"matchedAlerts": 2, "recentlyCounted": [UID, OTHER]}
    assert counted_status(status, Tally(UID, matched=True)) is None


def test_a_status_without_counters_starts_from_zero() -> None:
    assert counted_status({"conditions": []}, Tally(UID, actions=2)) == {
        "matchedAlerts": 0,
        "actionsTaken": 2,
        "recentlyCounted": [UID + "/actions"],
    }


def test_a_tally_needs_a_uid_and_no_negative_actions() -> None:
    with pytest.raises(ValueError, match="uid"):
        Tally("", matched=True)
    with pytest.raises(ValueError, match="0 or more"):
        Tally(UID, actions=-1)
    assert Tally(UID).parts() == []


def test_the_model_and_the_crd_bound_the_list() -> None:
    PolicyStatus.model_validate({"recentlyCounted": _keys(MAX_RECENTLY_COUNTED)})
    with pytest.raises(ValidationError):
        PolicyStatus.model_validate({"recentlyCounted": _keys(MAX_RECENTLY_COUNTED + 1)})
    for name in ("responsepolicies.yaml", "clusterresponsepolicies.yaml"):
        schema = all_crds()[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        field = schema["properties"]["status"]["properties"]["recentlyCounted"]
        assert field["maxItems"] == MAX_RECENTLY_COUNTED
        assert len(f"{UID}/actions") <= field["items"]["maxLength"]


# -- the read-modify-write ---------------------------------------------------------------------


def _policy(version: str = "1", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "contain", "resourceVersion": version}, "status": status}


def _count(rest: FakeRest, tally: Tally) -> bool:
    return count_alert(cast(RestClient, rest), POLICY, tally)


def test_counts_once_with_the_version_it_read() -> None:
    rest = FakeRest(_policy("5", matchedAlerts=1, actionsTaken=1))
    assert _count(rest, Tally(UID, matched=True, actions=3))
    assert rest.calls == [("GET", PATH), ("PATCH", PATH + "/status")]
    assert rest.patches[0]["metadata"] == {"resourceVersion": "5"}
    assert rest.obj is not None
    assert rest.obj["status"] == {
        "matchedAlerts": 2,
        "actionsTaken": 4,
        "recentlyCounted": [UID, UID + "/actions"],
    }
    # The re-run after a crash: one read, no write.
    assert _count(rest, Tally(UID, matched=True, actions=3))
    assert rest.calls[2:] == [("GET", PATH)]
    assert rest.obj["status"]["matchedAlerts"] == 2


def test_a_conflict_recomputes_from_the_other_writers_counts_and_keys() -> None:
    rest = FakeRest(_policy("1", matchedAlerts=0, actionsTaken=0))
    rest.interfere = [{"matchedAlerts": 1, "actionsTaken": 2, "recentlyCounted": [OTHER]}]
    assert _count(rest, Tally(UID, matched=True, actions=3))
    assert [p["metadata"]["resourceVersion"] for p in rest.patches] == ["1", "2"]
    assert rest.obj is not None
    assert rest.obj["status"] == {
        "matchedAlerts": 2,
        "actionsTaken": 5,
        "recentlyCounted": [OTHER, UID, UID + "/actions"],
    }


def test_a_conflict_with_a_writer_that_counted_the_same_alert_adds_nothing() -> None:
    """Two runs of one alert racing (a kopf retry and a restarted replica): one count."""
    rest = FakeRest(_policy("1"))
    rest.interfere = [
        {"matchedAlerts": 1, "actionsTaken": 3, "recentlyCounted": [UID, UID + "/actions"]}
    ]
    assert _count(rest, Tally(UID, matched=True, actions=3))
    assert len(rest.patches) == 1
    assert rest.obj is not None
    assert (rest.obj["status"]["matchedAlerts"], rest.obj["status"]["actionsTaken"]) == (1, 3)


def test_gives_up_after_a_bounded_number_of_conflicts() -> None:
    rest = FakeRest(_policy("1"))
    rest.interfere = [{"conditions": []}] * 100
    with pytest.raises(Conflict, match="not updated after"):
        _count(rest, Tally(UID, matched=True))
    assert 1 < len(rest.patches) < 100


def test_a_deleted_policy_is_not_counted() -> None:
    assert not _count(FakeRest(None), Tally(UID, matched=True))


def test_nothing_to_count_sends_nothing() -> None:
    rest = FakeRest(_policy("1"))
    assert _count(rest, Tally(UID))
    assert rest.calls == []

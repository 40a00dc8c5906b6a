"""``update_status`` writes a status computed from the object it read, conditional on that
read's ``resourceVersion``: on a 409 it reads again and recomputes from what the other writer
left, a bounded number of times, and never writes without a precondition."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import pytest

from falco_triage.k8s import status as status_module
from falco_triage.k8s.errors import Conflict, NotFound
from falco_triage.k8s.rest import RestClient
from falco_triage.k8s.status import ROUNDS, update_status
from tests.unit.fake_rest import FakeRest

PATH = "/apis/falcotriage.io/v1alpha1/namespaces/shop/falcoalerts/a"


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status_module, "_pause", lambda attempt: None)


def _alert(version: str = "1", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "a", "resourceVersion": version}, "status": status}


def _add_mine(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Append condition 'Mine' to whatever is stored: what a lost write would drop."""
    stored = (obj.get("status") or {}).get("conditions") or []
    kept = [c for c in stored if c["type"] != "Mine"]
    return {"conditions": [*kept, {"type": "Mine"}]}


def _update(rest: FakeRest, **kwargs: Any) -> dict[str, Any]:
    return update_status(cast(RestClient, rest), "falcoalerts", "shop", "a", _add_mine, **kwargs)


def test_the_patch_carries_the_version_it_was_computed_from() -> None:
    rest = FakeRest(_alert("5"))
    stored = _update(rest)
    assert rest.calls == [("GET", PATH), ("PATCH", PATH + "/status")]
    assert rest.patches[0]["metadata"] == {"resourceVersion": "5"}
    assert stored["status"]["conditions"] == [{"type": "Mine"}]


def test_a_known_object_saves_the_first_read() -> None:
    rest = FakeRest(_alert("5"))
    _update(rest, known=_alert("5"))
    assert rest.calls == [("PATCH", PATH + "/status")]


def test_a_stale_known_object_is_read_again_and_the_other_write_kept() -> None:
    rest = FakeRest(_alert("6", conditions=[{"type": "Theirs"}]))
    stored = _update(rest, known=_alert("5"))
    assert rest.calls == [("PATCH", PATH + "/status"), ("GET", PATH), ("PATCH", PATH + "/status")]
    assert stored["status"]["conditions"] == [{"type": "Theirs"}, {"type": "Mine"}]


def test_a_write_in_between_makes_it_recompute_from_what_was_written() -> None:
    rest = FakeRest(_alert("1", conditions=[{"type": "A"}], occurrences={"count": 3}))
    # Another writer gets in between our read and our patch, twice.
    rest.interfere = [
        {"conditions": [{"type": "A"}, {"type": "B"}]},
        {"occurrences": {"count": 4}},
    ]
    stored = _update(rest)
    assert len(rest.patches) == 3
    assert [p["metadata"]["resourceVersion"] for p in rest.patches] == ["1", "2", "3"]
    assert stored["status"]["conditions"] == [{"type": "A"}, {"type": "B"}, {"type": "Mine"}]
    assert stored["status"]["occurrences"] == {"count": 4}  # not ours: never in the patch
    assert all(set(p["status"]) == {"conditions"} for p in rest.patches)


def test_known_without_a_version_is_not_trusted() -> None:
    rest = FakeRest(_alert("5"))
    _update(rest, known={"metadata": {"name": "a"}})
    assert rest.calls[0] == ("GET", PATH)
    assert all(p["metadata"]["resourceVersion"] for p in rest.patches)


def test_gives_up_with_conflict_after_a_bounded_number_of_rounds() -> None:
    rest = FakeRest(_alert("1"))
    rest.interfere = [{"phase": "Received"}] * (ROUNDS + 5)
    with pytest.raises(Conflict, match=f"after {ROUNDS} conflicting writes"):
        _update(rest)
    assert len(rest.patches) == ROUNDS


def test_a_deleted_object_raises_not_found() -> None:
    with pytest.raises(NotFound):
        _update(FakeRest(None))
    with pytest.raises(NotFound):
        _update(FakeRest(None), known=_alert("5"))


def test_nothing_to_write_sends_nothing() -> None:
    rest = FakeRest(_alert("5"))
    result = update_status(
        cast(RestClient, rest), "falcoalerts", "shop", "a", lambda obj: None, known=_alert("5")
    )
    assert rest.calls == []
    assert result["metadata"]["resourceVersion"] == "5"


def test_cluster_scoped_objects() -> None:
    rest = FakeRest(_alert("5"))
    update_status(cast(RestClient, rest), "clusterresponsepolicies", None, "p", _add_mine)
    assert rest.calls == [
        ("GET", "/apis/falcotriage.io/v1alpha1/clusterresponsepolicies/p"),
        ("PATCH", "/apis/falcotriage.io/v1alpha1/clusterresponsepolicies/p/status"),
    ]

"""The operator's status writes keep every other writer's change, on the real API server.

``update_status`` sends its merge patch with the ``resourceVersion`` it computed from, and the
API server refuses it (409) once anyone else has written the object, status subresource
included. It then reads again and recomputes: a condition another writer added in between is
kept, next to ours. Under concurrent writers — a read-modify-write writer of another condition
type, a blind label writer and a receiver-like occurrences counter — no write is lost: each
writer finds its own last condition on every read, and the count is exact.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from falco_triage.k8s.client import new_api_client
from falco_triage.k8s.errors import Conflict
from falco_triage.k8s.rest import RestClient, resource_for
from falco_triage.k8s.status import FIELD_MANAGER, update_status
from falco_triage.models.common import (
    API_VERSION,
    Condition,
    ConditionStatus,
    merge_conditions,
    now,
)
from tests.support.controlplane import Cluster

ALERTS = resource_for(API_VERSION, "FalcoAlert")
# Long enough for the writers to collide many times even on a loaded machine; the race loop
# also runs until our writer has lost at least one race, up to RACE_MAX_SECONDS.
RACE_MIN_SECONDS = 3.0
RACE_MAX_SECONDS = 30.0


class CountingRest(RestClient):
    """A RestClient that counts the 409s its merge patches were answered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conflicts = 0
        self._lock = threading.Lock()

    def merge_patch(
        self, path: str, body: Mapping[str, Any], *, field_manager: str
    ) -> dict[str, Any]:
        try:
            return super().merge_patch(path, body, field_manager=field_manager)
        except Conflict:
            with self._lock:
                self.conflicts += 1
            raise


@pytest.fixture
def rest(control_plane: Cluster) -> CountingRest:
    return CountingRest(new_api_client(control_plane.kubeconfig, pool_size=8))


@pytest.fixture
def others(control_plane: Cluster) -> RestClient:
    """The other writers' own client (their 409s are not ours)."""
    return RestClient(new_api_client(control_plane.kubeconfig, pool_size=8))


@pytest.fixture
def alert(control_plane: Cluster, namespace: str) -> str:
    body = {
        "apiVersion": API_VERSION,
        "kind": "FalcoAlert",
        "metadata": {"name": "contested", "namespace": namespace},
        "spec": {
            "rule": "Terminal shell in container",
            "priority": "Notice",
            "source": "syscall",
            "time": "2026-11-25T10:21:04Z",
            "hostname": "worker-1",
            "outputFields": {"proc.name": "bash", "k8s.ns.name": namespace},
            "fingerprint": "ef" * 32,
            "target": {"kind": "Pod", "display": f"{namespace}/web-0", "namespace": namespace},
        },
    }
    control_plane.kubectl("create", "-f", "-", input=yaml.safe_dump(body))
    return "contested"


def _condition(type_: str, message: str) -> Condition:
    return Condition(
        type=type_,
        status=ConditionStatus.TRUE,
        reason="Test",
        message=message,
        last_transition_time=now(),
    )


def _set(type_: str, message: str) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """A status change setting one condition among the stored ones."""

    def change(stored: Mapping[str, Any]) -> dict[str, Any]:
        conditions = (stored.get("status") or {}).get("conditions")
        return {"conditions": merge_conditions(conditions, [_condition(type_, message)])}

    return change


def _conditions(obj: Mapping[str, Any]) -> dict[str, str]:
    return {c["type"]: c["message"] for c in (obj.get("status") or {}).get("conditions") or []}


def test_a_stale_merge_patch_of_status_is_refused(
    rest: CountingRest, namespace: str, alert: str
) -> None:
    stale = rest.get(ALERTS.path(namespace, alert))
    rest.merge_patch(
        ALERTS.path(namespace, alert, "status"),
        {"status": {"phase": "Received"}},
        field_manager="someone-else",
    )
    with pytest.raises(Conflict):
        rest.merge_patch(
            ALERTS.path(namespace, alert, "status"),
            {
                "metadata": {"resourceVersion": stale["metadata"]["resourceVersion"]},
                "status": {"conditions": []},
            },
            field_manager=FIELD_MANAGER,
        )


def test_a_condition_added_in_between_is_kept(
    rest: CountingRest, namespace: str, alert: str
) -> None:
    seen = rest.get(ALERTS.path(namespace, alert))
    # Another writer adds its condition after we read.
    update_status(rest, "falcoalerts", namespace, alert, _set("Theirs", "added in between"))
    conflicts = rest.conflicts
    stored = update_status(
        rest, "falcoalerts", namespace, alert, _set("Analyzed", "ours"), known=seen
    )
    assert rest.conflicts == conflicts + 1  # the stale write was refused, then recomputed
    assert _conditions(stored) == {"Theirs": "added in between", "Analyzed": "ours"}
    assert _conditions(rest.get(ALERTS.path(namespace, alert))) == _conditions(stored)


@dataclass
class Writer:
    """One concurrent writer: its last successful round, and every sign of a lost write."""

    name: str
    last: int = -1
    problems: list[str] = field(default_factory=list)


def test_concurrent_writers_lose_nothing(
    rest: CountingRest, others: RestClient, namespace: str, alert: str
) -> None:
    path, status_path = ALERTS.path(namespace, alert), ALERTS.path(namespace, alert, "status")
    stop = threading.Event()
    ours, theirs = Writer("Analyzed"), Writer("Theirs")
    counted: list[int] = []
    errors: list[str] = []

    def expect(writer: Writer, stored: Mapping[str, Any]) -> None:
        found = _conditions(stored).get(writer.name)
        if writer.last >= 0 and found != f"round {writer.last}":
            writer.problems.append(f"round {writer.last} gone, found {found!r}")

    def write_ours() -> None:
        # Our adapter, as the handlers use it (with kopf's possibly stale body as ``known``).
        known: Mapping[str, Any] | None = None
        for round_ in range(100_000):
            if stop.is_set():
                return

            def change(stored: Mapping[str, Any], round_: int = round_) -> dict[str, Any]:
                expect(ours, stored)
                return _set(ours.name, f"round {round_}")(stored)

            try:
                known = update_status(rest, "falcoalerts", namespace, alert, change, known=known)
            except Conflict:
                known = None  # lost every round this time (bounded): the handler retries later
                continue
            ours.last = round_

    def write_theirs() -> None:
        # An outside read-modify-write writer of its own condition type.
        for round_ in range(100_000):
            if stop.is_set():
                return
            stored = others.get(path)
            expect(theirs, stored)
            body = {
                "metadata": {"resourceVersion": stored["metadata"]["resourceVersion"]},
                "status": _set(theirs.name, f"round {round_}")(stored),
            }
            try:
                others.merge_patch(status_path, body, field_manager="outside")
            except Conflict:
                continue
            theirs.last = round_

    def count() -> None:
        # Like the receiver: occurrences.count + 1, conditional on the version read.
        for round_ in range(100_000):
            if stop.is_set():
                return
            stored = others.get(path)
            occurrences = (stored.get("status") or {}).get("occurrences") or {}
            seen = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            body = {
                "metadata": {"resourceVersion": stored["metadata"]["resourceVersion"]},
                "status": {
                    "occurrences": {
                        "count": int(occurrences.get("count") or 0) + 1,
                        "firstSeen": occurrences.get("firstSeen") or seen,
                        "lastSeen": seen,
                    }
                },
            }
            try:
                others.merge_patch(status_path, body, field_manager="counter")
            except Conflict:
                continue
            counted.append(round_)

    def label() -> None:
        # A blind metadata writer: moves the resourceVersion under everyone.
        for round_ in range(100_000):
            if stop.is_set():
                return
            others.merge_patch(
                path, {"metadata": {"labels": {"test/round": str(round_)}}}, field_manager="blind"
            )
            time.sleep(0.01)

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except Exception as exc:
                errors.append(f"{fn.__name__}: {type(exc).__name__}: {exc}"[:300])
                stop.set()

        return run

    threads = [
        threading.Thread(target=guarded(fn), daemon=True)
        for fn in (write_ours, write_theirs, count, label)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    while not stop.is_set():
        elapsed = time.monotonic() - started
        # Until our writer has lost a few races (or for at most RACE_MAX_SECONDS).
        if elapsed > RACE_MAX_SECONDS or (elapsed > RACE_MIN_SECONDS and rest.conflicts > 3):
            break
        time.sleep(0.1)
    stop.set()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert ours.problems == [], ours.problems[:3]
    assert theirs.problems == [], theirs.problems[:3]
    assert rest.conflicts > 0, "no write ever lost a race: nothing was tested"
    assert ours.last >= 0, ours
    assert theirs.last >= 0, theirs
    final = rest.get(path)
    assert _conditions(final) == {
        "Analyzed": f"round {ours.last}",
        "Theirs": f"round {theirs.last}",
    }
    assert final["status"]["occurrences"]["count"] == len(counted)

"""A 409 conflict storm on one FalcoAlert stays exact.

Two ``falco-triage ingest`` processes (the chart's receiver RBAC, a fast write rate so their
writes collide) count repeats of the same event into one alert while outside writers hammer
that same object: ``kubectl label`` and ``kubectl annotate`` loops (blind merge patches that
move its ``resourceVersion`` under the receivers), merge patches of another status field
(``status.conditions``) and replacements of the whole status, occurrences included — both
read-modify-write with the ``resourceVersion`` they read. The operator runs too: it analyzes
and decides the hot alert before the storm and the other alerts during it. Afterwards
``status.occurrences.count`` equals exactly the number of events the receivers acknowledged,
every fingerprint has exactly one FalcoAlert, the label and annotation writers' last changes
are there, and the storm really happened (the receivers and both status writers were answered
409). That the status writers' last conditions survive too is a separate, non-strict xfail: the
operator writes ``status.conditions`` as a whole list and can overwrite a condition added in
between (a known race).
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from falco_triage.k8s.client import new_api_client
from falco_triage.models.common import GROUP, VERSION
from tests.support.controlplane import Cluster
from tests.support.load import (
    AlertKey,
    ReceiverProcess,
    Sender,
    alert_counts,
    keyed,
    list_alerts,
    metric,
    receiver_account,
    run_senders,
)
from tests.support.processes import operator_service, wait_for
from tests.unit.factories import make_raw_event

pytestmark = pytest.mark.slow

STORM_SECONDS = 15.0
# Per sender: single-event POSTs of the hot event, plus a few distinct alerts around it.
HOT_RATE = 120.0
# Fast limiters on both receivers, so each writes the hot alert as soon as its last write
# returns: the two collide on nearly every write.
RECEIVER_SETTINGS = {"write_qps": 200, "write_burst": 50, "write_workers": 4}
SETTLE_SECONDS = 60.0


class OutsideWriter(threading.Thread):
    """Repeats one kind of write to the alert until stopped (bounded by ``max_rounds``),
    counting successes and 409s."""

    def __init__(self, name: str, write: Callable[[int], None], max_rounds: int = 2000) -> None:
        super().__init__(name=name, daemon=True)
        self.write = write
        self.max_rounds = max_rounds
        self.done = 0
        self.last = -1
        self.conflicts = 0
        self.errors: list[str] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        for round_ in range(self.max_rounds):
            if self.stop_event.is_set():
                return
            try:
                self.write(round_)
                self.done += 1
                self.last = round_
            except Conflict409:
                self.conflicts += 1
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            self.stop_event.wait(0.02)


class Conflict409(Exception):
    pass


def _kubectl_writer(cluster: Cluster, verb: str, key: AlertKey) -> Callable[[int], None]:
    """``kubectl label`` / ``annotate``: merge patches without a precondition."""
    namespace, name = key

    def write(round_: int) -> None:
        cluster.kubectl(
            verb, "falcoalert", name, "-n", namespace, f"storm.test/{verb}={round_}",
            "--overwrite", timeout=30,
        )  # fmt: skip

    return write


def _condition(round_: int, kind: str) -> dict[str, Any]:
    return {
        "type": f"Storm{kind}",
        "status": "True",
        "reason": "OutsideWriter",
        "message": f"round {round_}",
        "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _api_writers(kubeconfig: Path, key: AlertKey) -> tuple[Callable[[int], None], ...]:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.CustomObjectsApi(new_api_client(kubeconfig, pool_size=4))
    namespace, name = key
    args = (GROUP, VERSION, namespace, "falcoalerts", name)

    def conditions_without(
        status: dict[str, Any], kind: str, extra: dict[str, Any]
    ) -> list[dict[str, Any]]:
        kept = [c for c in status.get("conditions") or [] if c.get("type") != f"Storm{kind}"]
        return [*kept, extra]

    def merge_patch_status(round_: int) -> None:
        # Another status field, merged on top of the version read (409 if it moved).
        current = cast(dict[str, Any], api.get_namespaced_custom_object_status(*args))
        status = current.get("status") or {}
        body = {
            "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
            "status": {
                "conditions": conditions_without(status, "Merge", _condition(round_, "Merge"))
            },
        }
        try:
            api.patch_namespaced_custom_object_status(
                *args, body, _content_type="application/merge-patch+json"
            )
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict409 from None
            raise

    def replace_status(round_: int) -> None:
        # Read-modify-write of the whole status, occurrences included, with the version read.
        current = cast(dict[str, Any], api.get_namespaced_custom_object_status(*args))
        status = current.get("status") or {}
        status["conditions"] = conditions_without(status, "Replace", _condition(round_, "Replace"))
        try:
            api.replace_namespaced_custom_object_status(*args, current)
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict409 from None
            raise

    return merge_patch_status, replace_status


@dataclass
class Storm:
    """What one storm left behind, read once it settled."""

    hot_key: AlertKey
    others: int
    acked: Counter[AlertKey]
    metrics: list[dict[str, float]]
    alerts: dict[AlertKey, dict[str, Any]]
    writers: list[OutsideWriter]
    operator_log: str


def _written_all(receivers: list[ReceiverProcess]) -> list[dict[str, float]] | None:
    """Both receivers' metrics once each has counted every event it took as written.

    NB: a write shows in the API a moment before the receiver counts it in its metrics.
    """
    values = [r.metrics() for r in receivers]
    done = all(
        metric(v, "events_written_total") == metric(v, "events_accepted_total") for v in values
    )
    return values if done else None


@pytest.fixture(scope="module")
def storm(control_plane: Cluster) -> Iterator[Storm]:
    suffix = uuid.uuid4().hex[:8]
    namespace, own = f"ft-storm-{suffix}", f"ft-storm-op-{suffix}"
    for name in (namespace, own):
        control_plane.kubectl("create", "namespace", name)
    hot = make_raw_event(namespace=namespace, pod="hot-0")
    others = [make_raw_event(namespace=namespace, pod=f"pod-{i}") for i in range(4)]
    try:
        with (
            receiver_account(control_plane) as account,
            ReceiverProcess(
                account.kubeconfig, own, name="ingest-a", settings=RECEIVER_SETTINGS
            ) as a,
            ReceiverProcess(
                account.kubeconfig, own, name="ingest-b", settings=RECEIVER_SETTINGS
            ) as b,
            operator_service(
                control_plane.kubeconfig,
                "-n",
                namespace,
                # The storm's events carry a 2024 timestamp, older than any retention age: the
                # operator sweeps when it starts (before they exist), then not within the hour.
                env={
                    "FALCO_TRIAGE_NAMESPACE": own,
                    "FALCO_TRIAGE_OPERATOR__RETENTION__SWEEP_INTERVAL_SECONDS": "3600",
                },
            ) as operator,
        ):
            (hot_pair,) = keyed([hot], own)
            hot_key = hot_pair[1]
            # The alert exists before the storm, so every writer has something to fight over.
            seed = Sender(a.port, [hot_pair], rate=10, seconds=5, max_requests=1)
            run_senders([seed], timeout=10)
            wait_for(
                lambda: (
                    (list_alerts(control_plane, [namespace]).get(hot_key) or {})
                    .get("status", {})
                    .get("decision")
                ),
                timeout=30,
                what="the hot alert, analyzed and decided",
            )

            merge_status, replace_status = _api_writers(control_plane.kubeconfig, hot_key)
            writers = [
                OutsideWriter("label", _kubectl_writer(control_plane, "label", hot_key)),
                OutsideWriter("annotate", _kubectl_writer(control_plane, "annotate", hot_key)),
                OutsideWriter("merge-status", merge_status),
                OutsideWriter("replace-status", replace_status),
            ]
            mixed = keyed(others, own)
            senders = [
                Sender(a.port, [hot_pair], rate=HOT_RATE, seconds=STORM_SECONDS, name="hot-a"),
                Sender(b.port, [hot_pair], rate=HOT_RATE, seconds=STORM_SECONDS, name="hot-b"),
                Sender(a.port, mixed, rate=20, seconds=STORM_SECONDS, batch=5, name="mix-a"),
                Sender(b.port, mixed, rate=20, seconds=STORM_SECONDS, batch=5, name="mix-b"),
            ]
            for writer in writers:
                writer.start()
            try:
                run_senders(senders, timeout=STORM_SECONDS + 30)
            finally:
                for writer in writers:
                    writer.stop_event.set()
                for writer in writers:
                    writer.join(60)

            acked: Counter[AlertKey] = seed.tally.acked.copy()
            for sender in senders:
                assert sender.tally.shed == 0
                assert sender.tally.errors == [], sender.tally.errors[:3]
                assert set(sender.tally.statuses) == {200}, sender.tally.statuses
                acked.update(sender.tally.acked)

            def exact() -> bool:
                return alert_counts(control_plane, [namespace]) == dict(acked)

            wait_for(exact, timeout=SETTLE_SECONDS, what="counts equal to what was acknowledged")
            metrics = wait_for(
                lambda: _written_all([a, b]),
                timeout=SETTLE_SECONDS,
                what="each receiver to count every event it took as written",
            )
            yield Storm(
                hot_key,
                len(others),
                acked,
                metrics,
                list_alerts(control_plane, [namespace]),
                writers,
                operator.log(400),
            )
    finally:
        for name in (namespace, own):
            control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_counts_stay_exact_under_a_conflict_storm(storm: Storm) -> None:
    assert storm.acked[storm.hot_key] > 1000, "too little load to make a storm"
    # Exact: every alert counts what was acknowledged (waited for in the fixture), and each
    # receiver wrote everything it took, dropping nothing.
    for values in storm.metrics:
        assert metric(values, "events_dropped_total") == 0
    # One FalcoAlert per fingerprint.
    fingerprints = Counter(a["spec"]["fingerprint"] for a in storm.alerts.values())
    assert set(fingerprints.values()) == {1}
    assert len(storm.alerts) == 1 + storm.others

    # The storm happened: receivers collided with each other and the outside writers ...
    receiver_conflicts = sum(
        metric(values, "api_errors_total", operation="patch_status", reason="Conflict")
        for values in storm.metrics
    )
    assert receiver_conflicts > 0
    writers = storm.writers
    print(  # shown with -s, or when the test fails: how big the storm was
        f"storm: {storm.acked[storm.hot_key]} hot events acknowledged; receiver 409s "
        f"{receiver_conflicts:.0f}; "
        + ", ".join(f"{w.name} {w.done} writes/{w.conflicts} 409s" for w in writers)
    )
    # ... both status writers lost races too, and nobody failed for another reason.
    for writer in writers:
        assert writer.errors == [], (writer.name, writer.errors[:3])
        assert writer.done > 0, writer.name
    assert all(w.conflicts > 0 for w in writers[2:]), [(w.name, w.conflicts) for w in writers]

    # The blind metadata writers' last changes are there, and the operator's work too.
    hot_alert = storm.alerts[storm.hot_key]
    labels = hot_alert["metadata"].get("labels") or {}
    annotations = hot_alert["metadata"].get("annotations") or {}
    assert labels["storm.test/label"] == str(writers[0].last)
    assert annotations["storm.test/annotate"] == str(writers[1].last)
    for alert in storm.alerts.values():
        assert alert["status"].get("analysis"), storm.operator_log


# NB: not strict: an outside writer's status condition is sometimes lost. The operator writes
# status.conditions as a whole list computed from the object it read (a merge patch replaces
# lists), so a condition added meanwhile can be overwritten. Known race, to fix by making
# condition writes conditional on resourceVersion.
@pytest.mark.xfail(
    strict=False,
    reason="status.conditions written as a whole list can drop a "
    "condition another writer added in between (known race)",
)
def test_outside_status_conditions_survive(storm: Storm) -> None:
    writers = storm.writers
    hot_alert = storm.alerts[storm.hot_key]
    messages = {c["type"]: c["message"] for c in hot_alert["status"].get("conditions") or []}
    assert messages["StormMerge"] == f"round {writers[2].last}"
    assert messages["StormReplace"] == f"round {writers[3].last}"
    assert "Analyzed" in messages

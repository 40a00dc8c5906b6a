"""A 409 conflict storm on one FalcoAlert stays exact, and loses no writer's change.

Two ``falco-triage ingest`` processes (the chart's receiver RBAC, a fast write rate so their
writes collide) count repeats of the same event into one alert while outside writers hammer
that same object: ``kubectl label`` and ``kubectl annotate`` loops (blind merge patches that
move its ``resourceVersion`` under the receivers), merge patches of another status field
(``status.conditions``) and replacements of the whole status, occurrences included — both
read-modify-write with the ``resourceVersion`` they read, each adding a condition of its own
type. The operator runs too: it analyzes and decides the hot alert before the storm and the
other alerts during it, and a ``falcotriage.io/reanalyze`` loop makes it re-analyze the hot
alert, writing its ``Analyzed`` condition into the same ``status.conditions`` while the status
writers write theirs (all writers keep going after the storm, if need be, until it has written
over their conditions and they have read them back).

Afterwards ``status.occurrences.count`` equals exactly the number of events the receivers
acknowledged, every fingerprint has exactly one FalcoAlert, the label and annotation writers'
last changes are there, and the storm really happened (the receivers and both status writers
were answered 409). No condition was lost either: on every read each status writer found its
own last condition where it left it (nobody wrote a whole conditions list over it), and at the
end both writers' last conditions are there next to the operator's re-analysis.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
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
from tests.support.processes import Service, operator_service, wait_for
from tests.unit.factories import make_raw_event

pytestmark = pytest.mark.slow

STORM_SECONDS = 15.0
# Per sender: single-event POSTs of the hot event, plus a few distinct alerts around it.
HOT_RATE = 120.0
# Fast limiters on both receivers, so each writes the hot alert as soon as its last write
# returns: the two collide on nearly every write.
REANALYZE = f"{GROUP}/reanalyze"
# What the operator logs for each re-analysis it published (kopf, after the handler returned;
# a field handler's id names the field).
REANALYZED = re.compile(r"Handler 'on_reanalyze[^']*' succeeded")
RECEIVER_SETTINGS = {"write_qps": 200, "write_burst": 50, "write_workers": 4}
SETTLE_SECONDS = 60.0
# Re-analysis requests on the hot alert during the storm: each makes the operator write its
# conditions while the status writers write theirs. About one a second (kubectl's own start-up
# time comes on top) keeps the operator busy without turning it into the storm itself.
REANALYZE_PAUSE = 0.5


class OutsideWriter(threading.Thread):
    """Repeats one kind of write to the alert until stopped (bounded by ``max_rounds``),
    counting successes and 409s."""

    def __init__(
        self,
        name: str,
        write: Callable[[int], None],
        max_rounds: int = 2000,
        pause: float = 0.02,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.write = write
        self.max_rounds = max_rounds
        self.pause = pause
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
            self.stop_event.wait(self.pause)


class Conflict409(Exception):
    pass


def _kubectl_writer(
    cluster: Cluster, verb: str, key: AlertKey, name: str | None = None
) -> Callable[[int], None]:
    """``kubectl label`` / ``annotate``: merge patches without a precondition."""
    namespace, alert = key
    label = name or f"storm.test/{verb}"

    def write(round_: int) -> None:
        cluster.kubectl(
            verb, "falcoalert", alert, "-n", namespace, f"{label}={round_}",
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


@dataclass
class OwnCondition:
    """A status writer's own condition: what it last wrote, and each read that found it gone.

    Only this writer writes its condition type, and every other status writer here reads before
    it writes and writes conditionally on what it read; a read that does not find the last
    condition written means someone wrote a whole conditions list without looking.
    """

    kind: str
    written: str | None = None
    lost: list[str] = field(default_factory=list)

    def check(self, status: Mapping[str, Any]) -> None:
        if self.written is None:
            return
        found = {c.get("type"): c.get("message") for c in status.get("conditions") or []}
        if found.get(f"Storm{self.kind}") != self.written:
            self.lost.append(f"{self.written!r} gone (conditions: {found})"[:300])


def _api_writers(
    kubeconfig: Path, key: AlertKey
) -> tuple[Callable[[int], None], Callable[[int], None], list[OwnCondition]]:
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

    merged, replaced = OwnCondition("Merge"), OwnCondition("Replace")

    def merge_patch_status(round_: int) -> None:
        # Another status field, merged on top of the version read (409 if it moved).
        current = cast(dict[str, Any], api.get_namespaced_custom_object_status(*args))
        status = current.get("status") or {}
        merged.check(status)
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
        merged.written = f"round {round_}"

    def replace_status(round_: int) -> None:
        # Read-modify-write of the whole status, occurrences included, with the version read.
        current = cast(dict[str, Any], api.get_namespaced_custom_object_status(*args))
        status = current.get("status") or {}
        replaced.check(status)
        status["conditions"] = conditions_without(status, "Replace", _condition(round_, "Replace"))
        try:
            api.replace_namespaced_custom_object_status(*args, current)
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict409 from None
            raise
        replaced.written = f"round {round_}"

    return merge_patch_status, replace_status, [merged, replaced]


@dataclass
class Storm:
    """What one storm left behind, read once it settled."""

    hot_key: AlertKey
    others: int
    acked: Counter[AlertKey]
    metrics: list[dict[str, float]]
    alerts: dict[AlertKey, dict[str, Any]]
    writers: list[OutsideWriter]
    in_storm: dict[str, tuple[int, int]]
    """Each writer's (writes, 409s) while the receivers were sending."""
    own_conditions: list[OwnCondition]
    reanalyzed: int
    """Re-analyses of the hot alert the operator published while the writers were writing."""
    operator_log: str


def _reanalyses(operator: Service) -> int:
    """How many re-analyses the operator has published (it logs each)."""
    return len(REANALYZED.findall(operator.log(1_000_000)))


def _overlap_operator_and_status_writers(
    operator: Service, status_writers: list[OutsideWriter]
) -> None:
    """Keep the writers going until the operator has written its conditions over theirs and
    each status writer has read them back.

    NB: on a busy machine the operator gets to re-analysis requests late while the receivers
    hammer the alert, and a status writer can lose every race to them. So, with all writers
    still running: both status writers have a condition stored; then the operator publishes a
    re-analysis that started after that (the second logged from here: kopf runs one handler at
    a time per object, so the first may have read the alert earlier); then each status writer
    has read the alert, checked its condition and written again.
    """
    wait_for(
        lambda: all(w.done for w in status_writers),
        timeout=SETTLE_SECONDS,
        what="both status writers to store a condition",
    )
    published = _reanalyses(operator)
    wait_for(
        lambda: _reanalyses(operator) >= published + 2,
        timeout=SETTLE_SECONDS,
        what="the operator to publish a re-analysis over the status writers' conditions",
    )
    done = [w.done for w in status_writers]
    wait_for(
        lambda: all(w.done > d for w, d in zip(status_writers, done, strict=True)),
        timeout=SETTLE_SECONDS,
        what="each status writer to read its condition back and write again",
    )


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
    # NB: events from now, not the factory's 2024 default: the operator's first retention
    # sweep runs in the background once it has started, and can land after the seed alert
    # exists; an alert older than the retention age would be deleted under the test.
    at = datetime.now(UTC)
    hot = make_raw_event(namespace=namespace, pod="hot-0", at=at)
    others = [make_raw_event(namespace=namespace, pod=f"pod-{i}", at=at) for i in range(4)]
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
                # No sweep within the hour after the first one: the storm's alerts stay put.
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

            merge_status, replace_status, own_conditions = _api_writers(
                control_plane.kubeconfig, hot_key
            )
            reanalyze = _kubectl_writer(control_plane, "annotate", hot_key, REANALYZE)
            writers = [
                OutsideWriter("label", _kubectl_writer(control_plane, "label", hot_key)),
                OutsideWriter("annotate", _kubectl_writer(control_plane, "annotate", hot_key)),
                OutsideWriter("merge-status", merge_status),
                OutsideWriter("replace-status", replace_status),
                OutsideWriter("reanalyze", reanalyze, pause=REANALYZE_PAUSE),
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
                in_storm = {w.name: (w.done, w.conflicts) for w in writers}
                _overlap_operator_and_status_writers(operator, writers[2:4])
            finally:
                for writer in writers:
                    writer.stop_event.set()
                for writer in writers:
                    writer.join(60)
            # Nothing asked for a re-analysis before the writers started.
            reanalyzed = _reanalyses(operator)

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
                in_storm,
                own_conditions,
                reanalyzed,
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
    writers, in_storm = storm.writers, storm.in_storm
    print(  # shown with -s, or when the test fails: how big the storm was
        f"storm: {storm.acked[storm.hot_key]} hot events acknowledged; receiver 409s "
        f"{receiver_conflicts:.0f}; "
        + ", ".join(f"{name} {done} writes/{lost} 409s" for name, (done, lost) in in_storm.items())
        + f"; then {storm.reanalyzed} re-analyses published; conditions found gone: "
        + ", ".join(f"{c.kind} {len(c.lost)}" for c in storm.own_conditions)
    )
    # ... both status writers lost races during the storm too, every writer got its writes in
    # (NB: on a loaded machine a read-modify-write writer can lose every race while the
    # receivers send, and win only once they stop), and nobody failed for another reason.
    for writer in writers:
        assert writer.errors == [], (writer.name, writer.errors[:3])
        assert writer.done > 0, writer.name
    assert all(in_storm[w.name][1] > 0 for w in writers[2:4]), in_storm

    # The blind metadata writers' last changes are there, and the operator's work too.
    hot_alert = storm.alerts[storm.hot_key]
    labels = hot_alert["metadata"].get("labels") or {}
    annotations = hot_alert["metadata"].get("annotations") or {}
    assert labels["storm.test/label"] == str(writers[0].last)
    assert annotations["storm.test/annotate"] == str(writers[1].last)
    assert annotations[REANALYZE] == str(writers[4].last)
    for alert in storm.alerts.values():
        assert alert["status"].get("analysis"), storm.operator_log


def test_outside_status_conditions_survive(storm: Storm) -> None:
    # The operator wrote the hot alert's conditions while the status writers wrote theirs ...
    assert storm.reanalyzed > 0, storm.operator_log
    # ... and no status writer ever found its own last condition dropped, by the operator or
    # anyone else, and every last condition is there at the end.
    for own in storm.own_conditions:
        assert own.lost == [], (own.kind, len(own.lost), own.lost[:3])
    writers = storm.writers
    hot_alert = storm.alerts[storm.hot_key]
    messages = {c["type"]: c["message"] for c in hot_alert["status"].get("conditions") or []}
    assert messages["StormMerge"] == f"round {writers[2].last}"
    assert messages["StormReplace"] == f"round {writers[3].last}"
    assert messages["Analyzed"].startswith("re-analysis requested by annotation")

"""A response survives the operator being SIGKILLed at any step boundary, exactly once.

An Enforce policy with three actions (isolate the pod, label it, notify) responds to each alert.
The first operator runs with the test hook ``FALCO_TRIAGE_TEST_PAUSE_AT`` (see
``falco_triage.handlers.response_testhook``): each alert's response stops at one named point,
and the operator is SIGKILLed once every alert has reached its point. The status and the
cluster at that moment are checked against the point (the kill landed where it claims: at
``applied:N`` the step's object or Event exists but its record still says Planned). A second
operator, without the hook, then finishes every response. Afterwards, for every alert: phase
Remediated; one record per action, all Applied; the records written before the kill unchanged
(nothing applied before the kill was applied again); exactly one NetworkPolicy and one notify
Event; the pod labelled once, with rollback facts from before the first attempt; the alert's
finalizer; and the policy's counters exact (one alert matched, three actions taken).

The counters live on the policy, so no single write can settle the alert and count it: the
operator counts first, idempotently per alert, then writes the phase. At ``counted`` the kill
lands between the two: the counters are already exact at the kill, and the second operator,
which finds the alert unsettled and finishes it, must not count it again. At ``settled`` the
counters are exact at the kill and nothing is left to do.

Every boundary runs in one pair of operators: each alert has its own pod and its own policy
(selecting that pod), so the counters of each case are its own. The randomized test repeats
this for a few random points with random action orders, plus alerts killed at a random moment
while their response is in flight (mid-request included, the counting included). It prints
its seed; set ``FALCO_TRIAGE_TEST_CRASH_SEED`` to replay one.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support import response as r
from tests.support.controlplane import Cluster
from tests.support.processes import Service, wait_for

PAUSE_ENV = "FALCO_TRIAGE_TEST_PAUSE_AT"
SEED_ENV = "FALCO_TRIAGE_TEST_CRASH_SEED"
ACTIONS: Mapping[str, dict[str, Any]] = {
    "isolate": r.isolate_action(),
    "label": r.label_action(),
    "notify": r.notify_action(),
}
ORDER = ("isolate", "label", "notify")
QUARANTINE = "falcotriage.io/quarantine"
ISOLATION_PREFIX = "falcotriage.io/isolated-"
FINALIZER = "falcotriage.io/finalizer"
# Every boundary of a three-action response, in the order a response reaches them. There is no
# recorded:3: the last step's record goes out with the phase (docs/development.md).
BOUNDARIES = (
    "decided",
    "started:1",
    "applied:1",
    "recorded:1",
    "started:2",
    "applied:2",
    "recorded:2",
    "started:3",
    "applied:3",
    "before-phase",
    "counted",
    "settled",
)
# For waits on a dozen alerts at once (analysis, decision, a few API calls and status writes
# each): on the 2-core machine at load 5-8, 11 alerts reached their points in 7-9 s and the
# second operator started and finished them in 6-12 s. 90 s means broken, not slow.
MANY_TIMEOUT = 90.0
# In-flight kills land this long (at most) after the first in-flight decision: from decision to
# before-phase took 0.4-0.8 s here, so kills spread over the whole response (mid-request
# included, the counting included), and some land after it, at the settled guard.
IN_FLIGHT_MAX_DELAY = 1.0
RANDOM_POINTS = 3
IN_FLIGHT = 3


@dataclass(frozen=True)
class Case:
    """One alert, its pod and its policy; ``point`` is where the first operator stops.

    ``in_flight`` cases are killed at a random moment instead; their ``point`` (``settled``,
    the last) only holds a response that finished before the kill, so the kill may land
    anywhere in it.
    """

    slug: str
    point: str
    order: tuple[str, ...] = ORDER
    in_flight: bool = False

    @property
    def alert(self) -> str:
        return f"shell-{self.slug}"

    @property
    def pod(self) -> str:
        return f"web-{self.slug}"

    @property
    def policy(self) -> str:
        return f"contain-{self.slug}"

    def objects(self, namespace: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The pod and the policy that selects it (and no other case's pod)."""
        labels = {"app": "web", "crash-case": self.slug}
        match = {"rules": [r.RULE], "podSelector": {"matchLabels": {"crash-case": self.slug}}}
        actions = [ACTIONS[name] for name in self.order]
        return (
            r.pod(self.pod, namespace, labels=labels),
            r.policy(self.policy, namespace, actions, match=match),
        )

    def expected_at_kill(self) -> tuple[int, bool, int]:
        """At ``point``: (records Applied, next record Planned?, steps whose effect exists)."""
        n = len(self.order)
        if self.point == "decided":
            return 0, False, 0
        if self.point in ("before-phase", "counted"):
            return n - 1, True, n
        if self.point == "settled":
            return n, False, n
        kind, _, number = self.point.partition(":")
        step = int(number)
        return {
            "started": (step - 1, True, step - 1),
            "applied": (step - 1, True, step),
            "recorded": (step, False, step),
        }[kind]


def slug_of(point: str) -> str:
    return point.replace(":", "-")


# -- reading the namespace in one go -----------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """Every alert, pod, managed NetworkPolicy, notify Event and policy of the namespace."""

    alerts: dict[str, dict[str, Any]]
    pods: dict[str, dict[str, Any]]
    network_policies: list[dict[str, Any]]
    notify_events: list[dict[str, Any]]
    policies: dict[str, dict[str, Any]]

    @classmethod
    def take(cls, cluster: Cluster, namespace: str) -> Snapshot:
        def by_name(kind: str) -> dict[str, dict[str, Any]]:
            return {o["metadata"]["name"]: o for o in r.items(cluster, kind, namespace)}

        return cls(
            alerts=by_name("falcoalerts"),
            pods=by_name("pods"),
            network_policies=r.network_policies(cluster, namespace),
            notify_events=r.items(
                cluster, "events", namespace, "--field-selector", "reason=PolicyNotify"
            ),
            policies={
                n: dict(p.get("status") or {}) for n, p in by_name("responsepolicies").items()
            },
        )

    def status(self, case: Case) -> dict[str, Any]:
        return dict(self.alerts[case.alert].get("status") or {})

    def records(self, case: Case) -> dict[str, dict[str, Any]]:
        return r.records(self.status(case))

    def labels(self, case: Case) -> dict[str, str]:
        return dict(self.pods[case.pod]["metadata"].get("labels") or {})

    def effects(self, case: Case) -> dict[str, int]:
        """How many times each action's effect is on the cluster (0 before, 1 after).

        isolatePod counts its NetworkPolicies; its second operation, the pod's isolation
        label, is :meth:`isolation_labels`.
        """
        isolating = [
            p
            for p in self.network_policies
            if p["metadata"]["labels"].get("falcotriage.io/alert") == case.alert
        ]
        notified = [e for e in self.notify_events if e["involvedObject"]["name"] == case.alert]
        return {
            "isolate": len(isolating),
            "label": int(self.labels(case).get(QUARANTINE) == "true"),
            "notify": len(notified),
        }

    def isolation_labels(self, case: Case) -> int:
        return len([k for k in self.labels(case) if k.startswith(ISOLATION_PREFIX)])

    def caught(self, case: Case) -> str:
        """What the kill interrupted, for the test output: ``isolate=Applied label=Planned+``
        (``+``: the step's effect is on the cluster, its result not recorded yet)."""
        records = self.records(case)
        effects = self.effects(case)
        shown = [
            f"{name}={records[name]['result']}"
            + ("+" if records[name]["result"] == "Planned" and effects[name] else "")
            for name in case.order
            if name in records
        ]
        return f"phase={self.status(case).get('phase')} {' '.join(shown) or 'no records'}"


# -- the run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrashRun:
    namespace: str
    cases: list[Case]
    before: Snapshot  # right after the SIGKILL
    after: Snapshot  # after the second operator finished and stopped

    def case(self, point: str) -> Case:
        return next(c for c in self.cases if c.point == point and not c.in_flight)


def all_valid(cluster: Cluster, namespace: str, count: int) -> bool:
    policies = r.items(cluster, "responsepolicies", namespace)
    conditions = [r.valid_condition(p.get("status") or {}) for p in policies]
    assert all(c is None or c["status"] == "True" for c in conditions), conditions
    return len(conditions) == count and all(conditions)


def pause_line(namespace: str, case: Case) -> str:
    return f"{PAUSE_ENV}: FalcoAlert {namespace}/{case.alert} paused at {case.point}"


def wait_until_paused(service: Service, namespace: str, cases: Sequence[Case]) -> None:
    missing: list[Case] = list(cases)

    def all_paused() -> bool:
        text = service.log(1_000_000)
        missing[:] = [c for c in missing if pause_line(namespace, c) not in text]
        return not missing

    try:
        wait_for(all_paused, timeout=MANY_TIMEOUT, what="every alert to pause", interval=0.2)
    except TimeoutError as exc:
        points = ", ".join(f"{c.alert} at {c.point}" for c in missing)
        raise TimeoutError(f"{exc}; not paused: {points}") from None


def kill_in_flight(
    service: Service, cluster: Cluster, namespace: str, cases: Sequence[Case], rng: random.Random
) -> float:
    """Create the in-flight alerts; a random moment after the first is decided, return.

    The trigger is the operator's own log line for the decision (written right after
    ``status.decision``): polling the API server with kubectl lags by more than a whole
    response. Returns the delay chosen.
    """
    r.create(cluster, *(r.alert(c.alert, namespace, c.pod) for c in cases))
    decided = [f"FalcoAlert {namespace}/{c.alert}: Enforce" for c in cases]
    wait_for(
        lambda: any(line in service.log(1_000_000) for line in decided),
        timeout=MANY_TIMEOUT,
        what="an in-flight alert to be decided",
        interval=0.01,
    )
    delay = rng.uniform(0.0, IN_FLIGHT_MAX_DELAY)
    time.sleep(delay)
    return delay


def wait_until_finished(cluster: Cluster, namespace: str, cases: Sequence[Case]) -> None:
    """Every alert Remediated (its policy counts it before its phase is written, so once the
    phase is there no count of it is still to come)."""
    left: list[str] = []

    def finished() -> bool:
        snap = Snapshot.take(cluster, namespace)
        left[:] = [c.alert for c in cases if snap.status(c).get("phase") != "Remediated"]
        return not left

    try:
        wait_for(finished, timeout=MANY_TIMEOUT, what="every response to finish", interval=0.5)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; not finished: {', '.join(left)}") from None


@contextmanager
def crash_run(
    cluster: Cluster,
    cases: Sequence[Case],
    rng: random.Random | None = None,
) -> Iterator[CrashRun]:
    """Pause (or catch in flight) every case, SIGKILL, let a second operator finish."""
    namespace = r.new_namespace(cluster, "ft-crash")
    own = r.new_namespace(cluster, "ft-op")
    paused = [c for c in cases if not c.in_flight]
    flying = [c for c in cases if c.in_flight]
    points = ",".join(f"{c.point}@{c.alert}" for c in cases)
    try:
        with r.response_operator(cluster, own, env={PAUSE_ENV: points}, name="first") as first:
            pods_and_policies = [obj for c in cases for obj in c.objects(namespace)]
            r.create(cluster, *pods_and_policies)
            wait_for(
                lambda: all_valid(cluster, namespace, len(cases)),
                timeout=MANY_TIMEOUT,
                what="the operator to validate every policy",
                interval=0.2,
            )
            # NB: kopf updates its indexes before it calls any handler for the same event, so
            # once every Valid condition is written, decisions see every policy.
            started = time.monotonic()
            r.create(cluster, *(r.alert(c.alert, namespace, c.pod) for c in paused))
            wait_until_paused(first, namespace, paused)
            print(f"{len(paused)} alert(s) paused in {time.monotonic() - started:.1f} s")
            if flying:
                assert rng is not None
                delay = kill_in_flight(first, cluster, namespace, flying, rng)
                print(f"in-flight kill {delay:.2f} s after the first in-flight decision")
            first.kill()
        before = Snapshot.take(cluster, namespace)
        for case in cases:
            print(
                f"killed: {case.alert} ({case.point}, {'/'.join(case.order)}): "
                f"{before.caught(case)}"
            )
        started = time.monotonic()
        with r.response_operator(cluster, own, name="second"):
            wait_until_finished(cluster, namespace, cases)
            print(f"second operator finished in {time.monotonic() - started:.1f} s")
        yield CrashRun(namespace, list(cases), before, Snapshot.take(cluster, namespace))
    finally:
        r.delete(cluster, "namespace", own)
        r.delete(cluster, "namespace", namespace)


# -- what must hold ----------------------------------------------------------------------------


def assert_killed_at_point(run: CrashRun, case: Case) -> None:
    """The status and the cluster at the kill are exactly those of ``case.point``."""
    applied, in_step, effects = case.expected_at_kill()
    status = run.before.status(case)
    records = run.before.records(case)
    assert status.get("decision", {}).get("outcome") == "Matched", status
    assert (status.get("phase") == "Remediated") is (case.point == "settled"), status
    expected_names = list(case.order[: applied + int(in_step)])
    assert list(records) == expected_names, records
    for name in case.order[:applied]:
        assert records[name]["result"] == "Applied", records[name]
    if in_step:
        interrupted = records[case.order[applied]]
        assert interrupted["result"] == "Planned", interrupted
        assert interrupted.get("startedAt"), interrupted
        assert not interrupted.get("appliedAt"), interrupted
    found = run.before.effects(case)
    wanted = {name: int(index < effects) for index, name in enumerate(case.order)}
    assert found == wanted, (case.point, found)
    # Between steps, isolation is whole: its NetworkPolicy and its pod label, or neither.
    assert run.before.isolation_labels(case) == found["isolate"], run.before.labels(case)
    # The policy counts the alert after every step and before the phase.
    counters = run.before.policies[case.policy]
    found_counts = (counters.get("matchedAlerts") or 0, counters.get("actionsTaken") or 0)
    if case.point in ("counted", "settled"):
        assert found_counts == (1, len(case.order)), (case.point, counters)
    else:
        assert found_counts == (0, 0), (case.point, counters)


def assert_consistent_at_kill(run: CrashRun, case: Case) -> None:
    """An in-flight kill: whatever it interrupted, no effect is ahead of its start record and
    every Applied record's effect exists (once)."""
    records = run.before.records(case)
    effects = run.before.effects(case)
    for name in case.order:
        result = records.get(name, {}).get("result")
        allowed = {None: {0}, "Planned": {0, 1}, "Applied": {1}}[result]
        assert effects[name] in allowed, (name, result, effects)
    # Mid-isolation, the NetworkPolicy may be there without the label (it is created first,
    # so that it selects nothing until the label lands), never the other way round.
    assert run.before.isolation_labels(case) <= effects["isolate"], run.before.labels(case)


def assert_completed_exactly_once(run: CrashRun, case: Case) -> None:
    """The invariants after the second operator: everything once, nothing applied twice."""
    status = run.after.status(case)
    assert status.get("phase") == "Remediated", status
    records = run.after.records(case)
    assert list(records) == list(case.order), records
    for record in records.values():
        assert record["result"] == "Applied", record
        assert record.get("appliedAt"), record
    # What was recorded Applied before the kill was not run (or recorded) again.
    for name, record in run.before.records(case).items():
        if record["result"] == "Applied":
            assert records[name] == record, (name, record, records[name])
    assert run.after.effects(case) == dict.fromkeys(case.order, 1)
    labels = run.after.labels(case)
    assert run.after.isolation_labels(case) == 1, labels
    # Rollback facts from before the first attempt: the label was absent, so rollback removes
    # it (a re-run that re-read them from the labelled pod would keep it forever).
    previous = json.loads(records["label"]["rollback"]["previous"])
    assert previous == {QUARANTINE: None}, records["label"]["rollback"]
    isolate = records["isolate"]["rollback"]
    assert isolate["label"].startswith(ISOLATION_PREFIX), isolate
    assert labels.get(isolate["label"]) == "true", (isolate, labels)
    (policy,) = [
        p
        for p in run.after.network_policies
        if p["metadata"]["labels"].get("falcotriage.io/alert") == case.alert
    ]
    assert isolate["networkPolicy"] == policy["metadata"]["name"], isolate
    owners = policy["metadata"].get("ownerReferences") or []
    assert [o["uid"] for o in owners] == [run.after.alerts[case.alert]["metadata"]["uid"]]
    finalizers = run.after.alerts[case.alert]["metadata"].get("finalizers") or []
    assert finalizers.count(FINALIZER) == 1, finalizers
    counters = run.after.policies[case.policy]
    found = (counters.get("matchedAlerts"), counters.get("actionsTaken"))
    assert found == (1, len(case.order)), (case.policy, counters)
    # Each counter counted the alert once, under the key that stops a re-run counting it again.
    uid = run.after.alerts[case.alert]["metadata"]["uid"]
    assert counters.get("recentlyCounted") == [uid, f"{uid}/actions"], counters


# -- every boundary ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def boundary_run(control_plane: Cluster) -> Iterator[CrashRun]:
    cases = [Case(slug_of(point), point) for point in BOUNDARIES]
    with crash_run(control_plane, cases) as run:
        yield run


@pytest.mark.parametrize("point", BOUNDARIES)
def test_kill_at_boundary_then_restart_completes_exactly_once(
    boundary_run: CrashRun, point: str
) -> None:
    case = boundary_run.case(point)
    assert_killed_at_point(boundary_run, case)
    assert_completed_exactly_once(boundary_run, case)


# -- random points -----------------------------------------------------------------------------


def test_kill_at_random_points_then_restart_completes_exactly_once(
    control_plane: Cluster,
) -> None:
    seed = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(2**32))
    print(f"seed {seed} (replay: {SEED_ENV}={seed})")
    rng = random.Random(seed)
    cases = [
        Case(f"r{i}-{slug_of(point)}", point, tuple(rng.sample(ORDER, len(ORDER))))
        for i, point in enumerate(rng.sample(BOUNDARIES, RANDOM_POINTS))
    ]
    cases += [
        Case(f"flight{i}", "settled", tuple(rng.sample(ORDER, len(ORDER))), in_flight=True)
        for i in range(IN_FLIGHT)
    ]
    try:
        with crash_run(control_plane, cases, rng) as run:
            for case in run.cases:
                if case.in_flight:
                    assert_consistent_at_kill(run, case)
                else:
                    assert_killed_at_point(run, case)
                assert_completed_exactly_once(run, case)
    except BaseException as exc:
        exc.add_note(f"seed {seed}: replay with {SEED_ENV}={seed}")
        raise

"""A response survives the operator being SIGKILLed between two actions.

The first operator runs with the test hook ``FALCO_TRIAGE_TEST_PAUSE_AFTER_STEP=1``: it records
the first action of an Enforce policy and then sleeps, so the kill lands at a known point. A
second operator (no hook) picks the alert up where the status says it stopped. Afterwards there
is exactly one NetworkPolicy, one notification Event and one record per action, and the first
action was not run again.
"""

from __future__ import annotations

from tests.support import response as r
from tests.support.controlplane import Cluster
from tests.support.processes import wait_for

PAUSE_ENV = "FALCO_TRIAGE_TEST_PAUSE_AFTER_STEP"


def test_kill_between_actions_then_restart_completes_exactly_once(
    control_plane: Cluster, namespace: str
) -> None:
    own = r.new_namespace(control_plane, "ft-op")
    try:
        r.create_pod(control_plane, namespace, "web-0", labels={"app": "web"})
        actions = [r.isolate_action(), r.label_action(), r.notify_action()]
        with r.response_operator(control_plane, own, env={PAUSE_ENV: "1"}, name="first") as first:
            r.create_policy(control_plane, r.policy("contain", namespace, actions))
            r.create(control_plane, r.alert("shell", namespace, "web-0"))
            wait_for(
                lambda: "pausing after step 1" in first.log(400),
                timeout=r.RESPONSE_TIMEOUT,
                what="the first operator to pause after the first action",
            )
            before = r.records(r.status_of(control_plane, namespace, "shell"))
            assert list(before) == ["isolate"]
            assert before["isolate"]["result"] == "Applied"
            first.kill()

        with r.response_operator(control_plane, own, name="second"):
            status = r.wait_for_phase(control_plane, namespace, "shell", "Remediated")
    finally:
        r.delete(control_plane, "namespace", own)

    records = (status.get("remediation") or {}).get("actions") or []
    assert [rec["name"] for rec in records] == ["isolate", "label", "notify"]
    assert {rec["result"] for rec in records} == {"Applied"}
    # The first action was recorded once and not run again.
    assert records[0]["appliedAt"] == before["isolate"]["appliedAt"]
    assert len(r.network_policies(control_plane, namespace)) == 1
    assert len(r.events_for(control_plane, namespace, "shell", "PolicyNotify")) == 1
    # Counted once each, the action applied before the kill included.
    counters = wait_for(
        lambda: r.policy_status(control_plane, "contain", namespace).get("actionsTaken"),
        timeout=r.RESPONSE_TIMEOUT,
        what="the policy's counters",
    )
    assert counters == 3
    assert r.policy_status(control_plane, "contain", namespace)["matchedAlerts"] == 1
    labels = r.pod_labels(control_plane, namespace, "web-0")
    assert labels["falcotriage.io/quarantine"] == "true"
    assert len([k for k in labels if k.startswith("falcotriage.io/isolated-")]) == 1

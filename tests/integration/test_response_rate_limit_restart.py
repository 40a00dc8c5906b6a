"""A policy's rate limit holds across an operator restart.

The first operator remediates one alert under a policy allowing one action an hour, then stops.
A second operator, with nothing in memory, reads every alert's decision before it handles
anything (one LIST at start-up), so the next alert under that policy is RateLimited.
"""

from __future__ import annotations

from tests.support import response as r
from tests.support.controlplane import Cluster


def test_a_rate_limit_survives_an_operator_restart(control_plane: Cluster, namespace: str) -> None:
    own = r.new_namespace(control_plane, "ft-op")
    try:
        r.create_pod(control_plane, namespace, "web-0")
        r.create_pod(control_plane, namespace, "web-1")
        limited = r.policy(
            "label", namespace, [r.label_action()], rateLimit={"maxActions": 1, "window": "1h"}
        )
        with r.response_operator(control_plane, own, name="first"):
            r.create_policy(control_plane, limited)
            r.create(control_plane, r.alert("first", namespace, "web-0"))
            r.wait_for_phase(control_plane, namespace, "first", "Remediated")
        with r.response_operator(control_plane, own, name="second") as second:
            r.create(control_plane, r.alert("second", namespace, "web-1"))
            status = r.wait_for_phase(control_plane, namespace, "second", "NoAction")
            log = second.log(400)
    finally:
        r.delete(control_plane, "namespace", own)
    assert status["decision"]["outcome"] == "RateLimited", status["decision"]
    assert "falcotriage.io/quarantine" not in r.pod_labels(control_plane, namespace, "web-1")
    assert "Rate limits: 1 matched decisions" in log, log

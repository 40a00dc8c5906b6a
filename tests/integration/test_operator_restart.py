"""What an operator restart does to the alerts already there.

A settled alert (analyzed by the current knowledge base, decided) is not written at all: its
``resourceVersion`` is unchanged after a new operator has started and served a new alert (kopf
is kept from recording bookkeeping for handlers with nothing to do). An alert analyzed by an
older knowledge base is analyzed again on start-up.
"""

from __future__ import annotations

import json
from typing import Any

from tests.support import response as r
from tests.support.controlplane import Cluster
from tests.support.processes import wait_for


def _alert(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "falcoalert", name, "-n", namespace, "-o", "json").stdout
    alert: dict[str, Any] = json.loads(out)
    return alert


def test_a_restart_leaves_settled_alerts_alone_and_reanalyzes_stale_ones(
    control_plane: Cluster, namespace: str
) -> None:
    own = r.new_namespace(control_plane, "ft-op")
    try:
        with r.response_operator(control_plane, own, name="first"):
            r.create(control_plane, r.alert("settled", namespace, None))
            r.wait_for_phase(control_plane, namespace, "settled", "NoAction")
            r.create(control_plane, r.alert("stale", namespace, None))
            r.wait_for_phase(control_plane, namespace, "stale", "NoAction")
        # As if analyzed by an older knowledge base.
        control_plane.kubectl(
            "patch", "falcoalert", "stale", "-n", namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": {"analysis": {"kbVersion": "0-old"}}}),
        )  # fmt: skip
        settled = _alert(control_plane, namespace, "settled")

        with r.response_operator(control_plane, own, name="second"):
            stale = wait_for(
                lambda: (
                    a
                    if (a := _alert(control_plane, namespace, "stale"))["status"]["analysis"][
                        "kbVersion"
                    ]
                    != "0-old"
                    else None
                ),
                timeout=r.RESPONSE_TIMEOUT,
                what="the stale alert to be analyzed again",
            )
            # Served: a new alert is handled, so the start-up is over.
            r.create(control_plane, r.alert("new", namespace, None))
            r.wait_for_phase(control_plane, namespace, "new", "NoAction")
            after = _alert(control_plane, namespace, "settled")
    finally:
        r.delete(control_plane, "namespace", own)

    assert after["metadata"]["resourceVersion"] == settled["metadata"]["resourceVersion"]
    conditions = {c["type"]: c for c in stale["status"]["conditions"]}
    assert conditions["Analyzed"]["message"].startswith("re-analysis")

"""Operator start-up: where kopf keeps its bookkeeping, and how it talks to the API server."""

from __future__ import annotations

from typing import Any

import kopf

from falco_triage.handlers.state import current_settings
from falco_triage.models.common import GROUP

KOPF_PREFIX = f"kopf.{GROUP}"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # NB: kopf's default progress storage writes into status.kopf, which the structural CRD
    # schema prunes. Annotations are kept, and the diff base ignores spec (up to ~300 KiB of
    # output fields) so the last-handled-configuration annotation stays small.
    # NB: kopf treats every annotation under its prefix as its own bookkeeping and hides it
    # from change detection, so the prefix must not be ours (falcotriage.io/reanalyze is a
    # user-facing trigger).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration", ignored_fields=["spec", "status"]
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    operator = current_settings().operator
    # A standby replica takes over once the active one's peering record is this old (seconds).
    settings.peering.lifetime = operator.peering_lifetime_seconds
    # NB: kopf starts one worker per object with pending events, unbounded: a resumed backlog
    # of 1,000 alerts sent 1,000 status patches at once, which timed out and were retried
    # until the API server was saturated for minutes. Bounded, they queue in the operator.
    # A worker holds its slot until idle for ``idle_timeout`` (kopf's default, 5 s, mostly
    # waiting): shorter, so a slot serves the next alert soon after its last write.
    settings.queueing.worker_limit = operator.max_concurrent_alerts
    settings.queueing.idle_timeout = 1.0
    # Events on FalcoAlerts are the audit trail users read; keep the informational ones.
    settings.posting.level = 20
    # Re-establish watches well before typical load-balancer idle timeouts.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    settings.execution.max_workers = 8
